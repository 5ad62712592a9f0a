"""Dials for the peers the outbox holds messages for: a few at a time, within
``[node] peer-limit``, in turn.

A node that starts with messages for many peers keeps each as a dial target
(:mod:`..delivery._redial`); were they all dialled at once, the node would make a dial
storm and connect to more peers than its limit allows. So each dial of such a peer
waits for a slot: at most :data:`DIALS` at once, and only while the connected peers
and these dials leave room under the limit (clients and handshakes under way are not
counted). Dials wait their turn in the order they came (each target's own backoff
still spaces its rounds), so none waits for ever while room comes; but the dials of
peers whose last dial failed wait behind the others: a slot is held through a dial
and its handshake (up to their timeouts), so peers that do not answer would otherwise
keep the peers that do waiting for minutes.

Room comes when a peer leaves, and from the outbox itself: a connection one of these
dials opened is closed, after a goodbye, when peers owed messages wait for room and
that connection is idle at that very moment (the node's ``idle``: nothing owed to its
peer, no request or message of its being handled, no other dial target or app keeps
it), the least recently used first. Only that connection, and only while it is its
peer's one: a connection the peer dialled, or one an app opened or reused
(:meth:`OwedDials.claim`), is never closed. Were idle outbox connections kept, they
would hold their places for ever (an open connection stays) and the peers still owed
would never get a turn. For the same reason one such connection, by the same rule, is
closed when a peer dialling in is refused for want of room (:meth:`OwedDials.refused`):
that peer's next dial gets in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..wire._channel import Channel

log = logging.getLogger("p2phost.node")
#: Dials of peers owed messages in progress at once, at most.
DIALS = 8
#: Seconds between looks for an idle connection to close while peers owed messages
#: wait for room and none was idle (a request ending, say, wakes nothing).
RECHECK = 1.0


class OwedDials:
    """The slots the dials of peers owed messages take (see the module's docstring)."""

    def __init__(self, *, room: Callable[[], int],
                 channels: Callable[[str], Sequence[Channel]], limit: int) -> None:
        #: How many more peers may connect now (the limit less the connected peers).
        self._room = room
        #: The open channels of a peer (none: not connected).
        self._channels = channels
        self._limit = limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: The dials of peers whose last dial failed, waiting behind ``_waiters``.
        self._behind: deque[asyncio.Future[None]] = deque()
        #: Dials holding a slot.
        self.dialling = 0
        #: Peer -> the connection one of these dials opened to it (an app's or a
        #: target's use of the peer takes it out: :meth:`claim`).
        self._opened: dict[str, Channel] = {}
        #: Those being closed to make room (until they leave the peer table).
        self._retiring: set[Channel] = set()
        self._held_back = False
        self._recheck: asyncio.TimerHandle | None = None
        self._stopped = False
        #: When a refusal last looked for an idle connection (monotonic seconds).
        self._refused_at = float("-inf")
        #: Whether nothing uses the connection to a peer now (set by the node; until
        #: then none is).
        self.idle: Callable[[str], bool] = lambda peer: False
        #: Close a connection, after a goodbye saying who waits for its room (set by
        #: the node).
        self.retire: Callable[[Channel, str], None] | None = None

    @contextlib.asynccontextmanager
    async def slot(self, *, failed: bool = False) -> AsyncIterator[None]:
        """Hold a slot for one dial (waiting for one first, in turn; ``failed``: the
        peer's last dial failed, so behind the dials of the others)."""
        if self._waiters or self._behind or not self._fits():
            waiter = asyncio.get_running_loop().create_future()
            (self._behind if failed else self._waiters).append(waiter)
            self.wake()
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # given a slot as it was cancelled: the next takes it
                else:
                    waiter.cancel()
                    for queue in (self._waiters, self._behind):
                        with contextlib.suppress(ValueError):
                            queue.remove(waiter)
                raise
        else:
            self.dialling += 1
        try:
            yield
        finally:
            self._release()

    def opened(self, channel: Channel) -> None:
        """A dial in a slot opened ``channel`` (a new connection, not one reused)."""
        self._opened[channel.peer_id] = channel

    def claim(self, peer: str) -> None:
        """An app connected to ``peer`` (or a dial target reached it): its connection is
        no longer the outbox's to close."""
        self._opened.pop(peer, None)

    def wake(self) -> None:
        """Room may have come (a peer left, a dial ended, a peer is owed nothing now):
        the next dials go."""
        while (self._waiters or self._behind) and self._fits():
            waiter = (self._waiters or self._behind).popleft()
            if not waiter.done():
                self.dialling += 1
                waiter.set_result(None)
        self._make_room()

    def refused(self) -> None:
        """A peer dialling in was refused for want of room under the peer limit: close
        the least recently used idle connection these dials opened (by the same rule as
        for peers owed messages), so that peer's next dial gets in. One at a time: while
        one is being closed, refusals close no more; and at most one look a second,
        as anyone may open connections to be refused (each look asks the outbox)."""
        now = time.monotonic()
        if now - self._refused_at < RECHECK:
            return
        self._refused_at = now
        self._prune()
        if not self._retiring and not self._stopped and self.retire is not None:
            self._retire_idle(1, "a peer dialling in was refused for want of room",
                              logging.INFO)

    def stop(self) -> None:
        """The node is stopping: no more closing to make room."""
        self._stopped = True
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    def _fits(self) -> bool:
        return self.dialling < min(DIALS, self._room())

    def _release(self) -> None:
        self.dialling -= 1
        self.wake()

    def _live(self, channel: Channel) -> bool:
        return channel in self._channels(channel.peer_id)

    def _make_room(self) -> None:
        """Close idle outbox connections for the dials that wait for room (not for a
        slot)."""
        self._prune()
        waiting = len(self._waiters) + len(self._behind)
        wanted = min(waiting, DIALS - self.dialling)
        short = wanted - max(0, self._room() - self.dialling) - len(self._retiring)
        if wanted and short > 0 and not self._held_back:
            log.info("%d peers owed messages wait for room under [node] peer-limit (%d): "
                     "they are dialled as peers leave", waiting, self._limit)
        self._held_back = short > 0
        if short <= 0 or self._stopped or self.retire is None:
            return
        short -= self._retire_idle(short, "peers owed messages wait for room",
                                   logging.DEBUG)
        if short > 0 and self._recheck is None:  # none idle now: look again soon
            self._recheck = asyncio.get_running_loop().call_later(RECHECK, self._rewake)

    def _prune(self) -> None:
        """Forget the connections that left the peer table."""
        self._retiring = {c for c in self._retiring if self._live(c)}
        self._opened = {p: c for p, c in self._opened.items() if self._live(c)}

    def _retire_idle(self, count: int, why: str, level: int) -> int:
        """Close up to ``count`` idle connections these dials opened, the least recently
        used first, for ``why``; how many were."""
        assert self.retire is not None
        closing = sorted(self._idle(), key=lambda c: c.last_seen)[:count]
        for channel in closing:
            del self._opened[channel.peer_id]
            self._retiring.add(channel)
            log.log(level, "closing the outbox's connection to %s (idle, nothing owed or "
                    "in use): %s under [node] peer-limit (%d)", channel.peer_id, why,
                    self._limit)
            self.retire(channel, why)
        return len(closing)

    def _idle(self) -> list[Channel]:
        # Looked at now, from what uses each connection, not remembered: a peer sent
        # new messages, asked, or listed by discovery since it was last owed nothing
        # must keep its connection.
        return [c for p, c in self._opened.items()
                if c not in self._retiring and c.usable and list(self._channels(p)) == [c]
                and self.idle(p)]

    def _rewake(self) -> None:
        self._recheck = None
        if not self._stopped:
            self.wake()
