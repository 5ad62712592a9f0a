"""The bytes of requests a node has in flight to one peer: a window, with its waiters.

A node stops reading a peer's requests while its outbox to the peer is over its limit
(``Channel``: its answers must not pile up). Two nodes that flood each other with
requests each read the other's requests out of the kernel's buffers (megabytes on
loopback) faster than the answers could leave, passed the limit and stopped reading,
each waiting for the other: after the write timeout both closed the connection, and
every request failed. So a node keeps no more than half its outbox limit of requests
unanswered at a peer: a peer's own requests and its answers to ours (of about their
size) then stay under its limit, and it reads on. The rest wait here, in order, within
their own timeouts, as
HTTP/2's streams wait for a window (written here rather than with ``asyncio.Semaphore``,
which counts units: a window counts bytes, and lets a request of any size in while what
is in flight is under its size, as the outbox takes a frame while it has room).
"""

from __future__ import annotations

import asyncio
from collections import deque

from p2phost_sdk import ConnectionClosed


class RequestWindow:
    """Requests in flight to one peer, bounded by ``size`` bytes.

    The request path reads the fields inline: a request may go at once when ``waiters``
    is empty and ``in_flight`` is under ``size`` (then it adds its bytes itself); else it
    waits in :meth:`enter`. Either way it calls :meth:`leave` once answered or failed.
    (``size`` is positive: it is half a channel's outbox limit.)
    """

    __slots__ = ("closed", "in_flight", "size", "waiters")

    def __init__(self, size: float) -> None:
        self.size = size
        self.in_flight = 0
        #: The requests waiting, first come first served: (bytes, their future).
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        #: Why the channel ended, once it has (the waiters fail with it).
        self.closed: str | None = None

    async def enter(self, nbytes: int) -> None:
        """Wait until what is in flight is under the size (behind the requests waiting
        already), then count ``nbytes`` in; ConnectionClosed once the channel ended."""
        if self.closed is not None:
            raise ConnectionClosed(self.closed)
        if not self.waiters and self.in_flight < self.size:
            self.in_flight += nbytes
            return
        granted = asyncio.get_running_loop().create_future()
        self.waiters.append((nbytes, granted))
        try:
            await granted
        except asyncio.CancelledError:  # (a timeout): the bytes, if granted just now, back
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.leave(nbytes)
            raise

    def leave(self, nbytes: int) -> None:
        """``nbytes`` answered (or failed): the requests waiting that now fit go."""
        self.in_flight -= nbytes
        waiters = self.waiters
        while waiters and self.in_flight < self.size:
            size, granted = waiters.popleft()
            if not granted.done():  # (cancelled: its requester gave up)
                self.in_flight += size
                granted.set_result(None)

    def close(self, why: str) -> None:
        """The channel ended: the requests waiting fail with ConnectionClosed(``why``)."""
        self.closed = why
        while self.waiters:
            _, granted = self.waiters.popleft()
            if not granted.done():
                granted.set_exception(ConnectionClosed(why))
