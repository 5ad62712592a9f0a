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

A request let in is posted by the window itself, as the answer that made room leaves:
its requester waits for its reply alone, not first for its turn (a burst of 20,000
requests, most of them in line, took a third longer with a task step and a future
more per request). Should the outbox be full then, the request stays at the head of
the line, let in, and goes as soon as the outbox has room (``room``, called by the
channel's writer) or another answer leaves. A request let in at once that found the
outbox full waits for room on its own (``sending``): the line waits for it, as it was
made first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from p2phost_sdk import ConnectionClosed

if TYPE_CHECKING:
    from ..messaging._stats import Tally

#: Requests that may be in flight whatever their bytes: one large request (an upload
#: whose handler takes its time) does not hold back every other request to its peer.
FEW = 4

# What a request in line is: waiting, let in (counted in the window; sent, or at the
# head of the line until the outbox has room), or gone (it gave up, or failed, in line).
_LINE, _IN, _GONE = 0, 1, 2


class Waiting:
    """A request in line: its frame, the future of its reply, and the tally to count it
    in once sent. Its requester awaits ``reply`` and then calls
    :meth:`RequestWindow.done_with`."""

    __slots__ = ("frame", "reply", "sent", "state", "tally")

    def __init__(self, frame: bytes, reply: asyncio.Future[object], tally: Tally) -> None:
        self.frame, self.reply, self.tally = frame, reply, tally
        #: Whether the frame went to the peer.
        self.sent = False
        self.state = _LINE

    @property
    def let_in(self) -> bool:
        """Whether it was let in (its bytes counted in the window), sent or not yet."""
        return self.state == _IN


class RequestWindow:
    """Requests in flight to one peer, bounded by ``size`` bytes (and :data:`FEW` go
    whatever their bytes); ``post`` queues a frame on the channel if its outbox has
    room.

    The request path reads the fields inline: a request may go at once when ``waiters``
    is empty and its bytes are under ``size`` or its count under FEW (then it counts
    itself in: ``in_flight``, ``count``, and calls :meth:`leave` once answered or
    failed); else it gets in line (:meth:`line_up`).
    """

    __slots__ = ("_letting", "_post", "closed", "count", "in_flight", "sending", "size",
                 "waiters", "waiting")

    def __init__(self, size: float, post: Callable[[bytes], bool]) -> None:
        self.size = size
        self._post = post
        #: The bytes and the number of the requests in flight (let in).
        self.in_flight = 0
        self.count = 0
        #: The line, first come first served, and how many in it still wait (the rest
        #: gave up: passed by as they come up, or swept, see done_with).
        self.waiters: deque[Waiting] = deque()
        self.waiting = 0
        #: Requests let in at once that wait for room in the outbox (the request path's
        #: own wait): the line goes after them, as they were made before it.
        self.sending = 0
        #: Why the channel ended, once it has (the requests in line fail with it).
        self.closed: str | None = None
        # (_let_in posts, and a post may hand the outbox over, which calls room: once)
        self._letting = False

    def line_up(self, frame: bytes, reply: asyncio.Future[object], tally: Tally) -> Waiting:
        """A request that found no room, or others waiting: in line. The window posts its
        frame once it is let in; its requester awaits ``reply`` (failed with
        ConnectionClosed once the channel ended), then calls :meth:`done_with`. (No timer
        here: the requester's own deadline fails ``reply``.)"""
        waiting = Waiting(frame, reply, tally)
        if self.closed is not None:
            waiting.state = _GONE
            reply.set_exception(ConnectionClosed(self.closed))
            return waiting
        self.waiters.append(waiting)
        self.waiting += 1
        self._let_in()  # (at once if those before it gave up and there is room)
        return waiting

    @property
    def blocked(self) -> bool:
        """Whether the line waits for room in the outbox (its head was let in, but the
        outbox was full, or requests made before it wait for room), not for answers."""
        return bool(self.sending) or (bool(self.waiters) and self.waiters[0].state == _IN)

    def done_with(self, waiting: Waiting) -> None:
        """A request from the line is answered, failed, or gave up: its bytes back if it
        was let in, else out of line. Should most of the line have given up (a window held
        full by requests without a deadline the peer never answers, while others time out
        in line), the line is swept: it holds no more than those still waiting, twice
        over."""
        if waiting.state == _IN:
            self.leave(len(waiting.frame))
        elif waiting.state == _LINE:
            waiting.state = _GONE
            self.waiting -= 1
            # What it holds goes now, not when the line reaches it: its frame, and its
            # reply's error, whose traceback holds the request's locals (the body too).
            # (Gone, it is never read again: every look at the line checks state first.)
            del waiting.frame, waiting.reply, waiting.tally
            if len(self.waiters) > 64 and len(self.waiters) > 2 * self.waiting:
                self.waiters = deque(w for w in self.waiters if w.state != _GONE)

    def leave(self, nbytes: int) -> None:
        """A request of ``nbytes`` answered (or failed): the requests waiting that now
        fit go."""
        self.in_flight -= nbytes
        self.count -= 1
        if self.waiters:
            self._let_in()

    def room(self) -> None:
        """The outbox has room again, or the requests let in before the line were sent:
        the line goes on (a request let in but not sent first)."""
        if self.waiters and not self._letting:
            self._let_in()

    def _let_in(self) -> None:
        if self.sending:  # (the request path calls room once they are sent)
            return
        waiters = self.waiters
        self._letting = True
        try:
            while waiters:
                waiting = waiters[0]
                state = waiting.state
                if state == _GONE:
                    waiters.popleft()
                    continue
                if waiting.reply.done():  # failed or cancelled: its requester learns it
                    waiters.popleft()
                    if state == _LINE:
                        waiting.state = _GONE
                        self.waiting -= 1
                    continue  # (one let in gives its bytes back in done_with)
                if state == _LINE:
                    if not (self.in_flight < self.size or self.count < FEW):
                        return
                    waiting.state = _IN
                    self.waiting -= 1
                    self.in_flight += len(waiting.frame)
                    self.count += 1
                try:
                    if not self._post(waiting.frame):
                        return  # (the outbox is full: it goes first once there is room)
                except Exception as exc:
                    # A transport's try_send that raised: this request's failure, not
                    # that of the request whose answer let it in.
                    waiters.popleft()
                    waiting.reply.set_exception(exc)
                    continue
                waiters.popleft()
                waiting.sent = True
                tally = waiting.tally
                tally.sent += 1
                tally.bytes_sent += len(waiting.frame)
        finally:
            self._letting = False

    def close(self, why: str) -> None:
        """The channel ended: the requests in line, and one let in but not sent, fail
        with ConnectionClosed(``why``)."""
        self.closed = why
        while self.waiters:
            waiting = self.waiters.popleft()
            if waiting.state == _GONE:
                continue
            if waiting.state == _LINE:
                waiting.state = _GONE
            if not waiting.reply.done():
                waiting.reply.set_exception(ConnectionClosed(why))
        self.waiting = 0
