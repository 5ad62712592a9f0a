"""The bytes of requests a node has in flight to one peer: a window, with its waiters.

A node stops reading a peer's requests while its outbox to the peer is over its limit
(``Channel``: its answers must not pile up). Two nodes that flood each other with
requests each read the other's requests out of the kernel's buffers (megabytes on
loopback) faster than the answers could leave, passed the limit and stopped reading,
each waiting for the other: after the write timeout both closed the connection, and
every request failed. So a node keeps no more than half its outbox limit of requests
unanswered at a peer: a peer's own requests and its answers to ours (of about their
size) then stay under its limit, and it reads on. The rest wait here, in order, within
their own timeouts, as HTTP/2's streams wait for a window (written here rather than with
``asyncio.Semaphore``, which counts units: a window counts bytes, and lets a request of
any size in while what is in flight is under its size, as the outbox takes a frame while
it has room).
"""

from __future__ import annotations

import asyncio
from collections import deque

from p2phost_sdk import ConnectionClosed

#: Requests that may be in flight whatever their bytes: one large request (an upload
#: whose handler takes its time) does not hold back every other request to its peer.
FEW = 4


class RequestWindow:
    """Requests in flight to one peer, bounded by ``size`` bytes (and :data:`FEW` go
    whatever their bytes).

    The request path reads the fields inline: a request may go at once when ``waiters``
    is empty and its bytes are under ``size`` or its count under FEW (then it counts
    itself in: ``in_flight``, ``count``); else it waits in line (:meth:`wait`). Either
    way it calls :meth:`leave` once answered or failed.
    """

    __slots__ = ("closed", "count", "gone", "in_flight", "size", "waiters")

    def __init__(self, size: float) -> None:
        self.size = size
        #: The bytes and the number of the requests in flight.
        self.in_flight = 0
        self.count = 0
        #: The requests waiting, first come first served: (bytes, their future); and how
        #: many of them gave up (passed by as they come up, or swept: see give_up).
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.gone = 0
        #: Why the channel ended, once it has (the waiters fail with it).
        self.closed: str | None = None

    def wait(self, nbytes: int) -> asyncio.Future[None]:
        """A request of ``nbytes``, in line: a future done once it is counted in (at once
        when what is in flight is under the size, or fewer than FEW requests, and no one
        waits), failed with ConnectionClosed once the channel ended. Its requester, should
        it stop waiting (a timeout, a cancellation), calls :meth:`give_up`. (No timer
        here: the requester's own deadline ends its wait.)"""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed is not None:
            granted.set_exception(ConnectionClosed(self.closed))
        elif not self.waiters and self._has_room():
            self.in_flight += nbytes
            self.count += 1
            granted.set_result(None)
        else:
            self.waiters.append((nbytes, granted))
        return granted

    def give_up(self, nbytes: int, granted: asyncio.Future[None]) -> None:
        """A requester stopped waiting: out of line (``leave`` passes it by), or its bytes
        back if it was counted in just now. Should most of the line have given up (a
        window held full by requests without a deadline the peer never answers, while
        others time out in line), the line is swept: it holds no more than those still
        waiting, twice over."""
        if granted.done() and not granted.cancelled() and granted.exception() is None:
            self.leave(nbytes)
            return
        granted.cancel()  # (if still pending; one failed as its reply settled stays failed)
        self.gone += 1
        if self.gone > 64 and 2 * self.gone > len(self.waiters):
            self.waiters = deque(w for w in self.waiters if not w[1].done())
            self.gone = 0

    def leave(self, nbytes: int) -> None:
        """A request of ``nbytes`` answered (or failed): the requests waiting that now
        fit go."""
        self.in_flight -= nbytes
        self.count -= 1
        waiters = self.waiters
        while waiters and self._has_room():
            size, granted = waiters.popleft()
            if granted.done():  # (cancelled: its requester gave up)
                self.gone -= 1
            else:
                self.in_flight += size
                self.count += 1
                granted.set_result(None)

    def _has_room(self) -> bool:
        # (the request path has this check inline)
        return self.in_flight < self.size or self.count < FEW

    def close(self, why: str) -> None:
        """The channel ended: the requests waiting fail with ConnectionClosed(``why``)."""
        self.closed = why
        self.gone = 0
        while self.waiters:
            _, granted = self.waiters.popleft()
            if not granted.done():
                granted.set_exception(ConnectionClosed(why))
