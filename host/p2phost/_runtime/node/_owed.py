"""Dials for the peers the outbox holds messages for: a few at a time, within
``[node] peer-limit``, in turn.

A node that starts with messages for many peers keeps each as a dial target
(:mod:`..delivery._redial`); were they all dialled at once, the node would make a dial
storm and connect to more peers than its limit allows. So each dial of such a peer
waits for a slot: at most :data:`DIALS` at once, and only while the connected peers
and these dials leave room under the limit. Dials wait their turn in the order they
came (each target's own backoff still spaces its rounds), so none waits for ever while
room comes. Room comes when a peer leaves, and from the outbox itself: a connection
one of these dials opened, whose peer is owed nothing any more, is closed when other
peers owed messages wait for room (it would otherwise hold its place for ever, as an
open connection stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

log = logging.getLogger("p2phost.node")
#: Dials of peers owed messages in progress at once, at most.
DIALS = 8


class OwedDials:
    """The slots the dials of peers owed messages take (see the module's docstring)."""

    def __init__(self, *, room: Callable[[], int], connected: Callable[[str], bool],
                 limit: int) -> None:
        #: How many more peers may connect now (the limit less the connected peers).
        self._room = room
        self._connected = connected
        self._limit = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: Dials holding a slot.
        self.dialling = 0
        #: Peers whose connection one of these dials opened.
        self._opened: set[str] = set()
        #: Of those, the ones owed nothing any more (still connected), oldest first.
        self._spare: dict[str, None] = {}
        self._retiring: set[str] = set()
        self._held_back = False
        #: Close the connections to a peer (set by the node).
        self.retire: Callable[[str], None] | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for one dial (waiting for one first, in turn)."""
        if self._waiters or not self._fits():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self.wake()
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # given a slot as it was cancelled: the next takes it
                else:
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        else:
            self.dialling += 1
        try:
            yield
        finally:
            self._release()

    def opened(self, peer: str) -> None:
        """A dial in a slot connected to ``peer``."""
        self._opened.add(peer)

    def owed(self, peer: str) -> None:
        """``peer`` is owed messages (again): its connection is no spare one."""
        self._spare.pop(peer, None)

    def settled(self, peer: str) -> None:
        """``peer`` is owed nothing, and nothing else keeps it connected: the connection
        a dial of these opened to it may go to make room."""
        if peer in self._opened:
            self._opened.discard(peer)
            if self._connected(peer):
                self._spare[peer] = None
                self.wake()

    def wake(self) -> None:
        """Room may have come (a peer left, a dial ended): the next dials go."""
        while self._waiters and self._fits():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.dialling += 1
                waiter.set_result(None)
        self._make_room()

    def _fits(self) -> bool:
        return self.dialling < min(DIALS, self._room())

    def _release(self) -> None:
        self.dialling -= 1
        self.wake()

    def _make_room(self) -> None:
        """Close spare connections for the dials that wait for room (not for a slot)."""
        self._retiring = {p for p in self._retiring if self._connected(p)}
        for peer in [p for p in self._spare if not self._connected(p)]:
            del self._spare[peer]
        wanted = min(len(self._waiters), DIALS - self.dialling)
        short = wanted - max(0, self._room() - self.dialling) - len(self._retiring)
        if wanted and short > 0 and not self._held_back:
            log.info("%d peers owed messages wait for room under [node] peer-limit (%d): "
                     "they are dialled as peers leave", len(self._waiters), self._limit)
        self._held_back = short > 0
        while short > 0 and self._spare and self.retire is not None:
            peer = next(iter(self._spare))
            del self._spare[peer]
            self._retiring.add(peer)
            log.debug("closing the outbox's connection to %s (owed nothing): peers owed "
                      "messages wait for room", peer)
            self.retire(peer)
            short -= 1
