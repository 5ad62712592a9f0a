"""The requests this node sent that wait for a reply, and the one timer that expires them.

A timer per request costs more than the request itself on a fast path (the loop's heap
fills with cancelled timers): one timer, re-aimed at the earliest outstanding deadline
when it fires, scans only the requests still waiting.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection
from typing import Any

from p2phost_sdk import PeerUnavailable, RequestTimeout

from ..._errors import UserError
from .._loop import future_maker, loop_clock

#: The due time of a request without a deadline (``timeout=None``): never.
FOREVER = math.inf


class PendingRequests:
    """The dispatcher's table of waiting requests (a base class: the per-request path
    reads ``_pending`` and the timer as its own attributes, with no call in between)."""

    def __init__(self) -> None:
        # message id -> (peer, topic, reply, clock time it is due, timeout)
        self._pending: dict[int, tuple[str, str, asyncio.Future[Any], float, float]] = {}
        # One timer for all requests, set for the earliest that is due (see _expire_due).
        self._timer: asyncio.Handle | None = None
        # uvloop's handle for a time already past has no when(): the time is kept here.
        self._timer_at = 0.0
        #: The node's loop, once a request looked it up (until the node shuts down).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The loop's clock and a new future of the loop (``_loop.py``): set with
        #: ``_loop`` by :meth:`_started`.
        self._clock: Callable[[], float] | None = None
        self._new_future: Callable[[], asyncio.Future[Any]] = _no_loop

    def _started(self) -> Callable[[], float]:
        # The first request on this loop: looked up once (a lookup of the running loop
        # is a system call, getpid, on Linux).
        loop = self._loop = asyncio.get_running_loop()
        self._new_future = future_maker(loop)
        self._clock = clock = loop_clock(loop)
        return clock

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._expire_due)
        self._timer_at = when

    def _expire_due(self) -> None:
        self._timer = None
        assert self._clock is not None
        now, nearest = self._clock() + 0.001, FOREVER
        for message_id, (peer, topic, reply, due, timeout) in list(self._pending.items()):
            if due <= now:
                del self._pending[message_id]
                if not reply.done():
                    reply.set_exception(timed_out(peer, topic, timeout))
            elif due < nearest:
                nearest = due
        if nearest != FOREVER:  # (requests without a deadline never need the timer)
            self._arm(nearest)

    def waits_on(self, peer_id: str) -> bool:
        """Whether a request to ``peer_id`` waits for its reply."""
        return any(entry[0] == peer_id for entry in self._pending.values())

    async def answered(self, peers: set[str], timeout: float) -> None:
        """Wait up to ``timeout`` seconds while a request with a deadline to one of
        ``peers`` waits for its reply: a closing node's requests are still answered (the
        replies may follow the peer's goodbye), or fail as the peer's connection ends. One
        without a deadline (``timeout=None``: a long poll, say) is not waited for. Asked
        once, as the node closes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Their futures are waited on, not the table polled (no event per reply: the
        # request path stays as it is). Again until none is left: a handler may still
        # make a request to such a peer while the node closes.
        while (left := deadline - loop.time()) > 0 and (replies := self.replies_due(peers)):
            await asyncio.wait(replies, timeout=left)

    def replies_due(self, peers: Collection[str]) -> list[asyncio.Future[Any]]:
        """The replies that requests with a deadline to ``peers`` wait for now."""
        return [reply for peer, _, reply, due, _ in self._pending.values()
                if peer in peers and due != FOREVER and not reply.done()]

    def fail_pending(self, peer_id: str | None, reason: str) -> None:
        """Fail the requests waiting on ``peer_id`` (every request when None)."""
        if peer_id is None:  # the node shuts down: it may run again on another loop
            self._loop = self._clock = None
            self._new_future = _no_loop
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        for message_id, (peer, _, reply, _, _) in list(self._pending.items()):
            if peer_id is None or peer == peer_id:
                del self._pending[message_id]
                if not reply.done():
                    reply.set_exception(PeerUnavailable(f"peer {peer}: {reason}"))


#: The last deadline a request's envelope can carry (ms since the epoch, 8 bytes).
LAST_DEADLINE = (1 << 64) - 1


def deadline_of(timeout: object) -> tuple[float, int]:
    """A request's ``timeout`` in seconds (None: ``math.inf``) and its envelope's deadline
    (ms since the epoch, 0 for none); UserError for a bad one. (``Outgoing.request``
    does the same inline, on the round trip's path.)"""
    seconds = FOREVER if timeout is None else timeout
    try:
        deadline = int((time.time() + seconds) * 1000)  # type: ignore[operator]
        if not 0 <= seconds or deadline > LAST_DEADLINE or seconds.__class__ is bool:  # type: ignore[operator]
            raise OverflowError
    except (TypeError, ValueError, OverflowError):
        return without_deadline(seconds)
    return seconds, deadline  # type: ignore[return-value]


def without_deadline(timeout: object) -> tuple[float, int]:
    """A request's timeout that is no number of seconds a deadline can hold: ``math.inf``
    (what ``timeout=None`` is taken as) waits without one (``(inf, 0)``: the envelope's
    "no deadline"); any other such value is refused with a fix."""
    if timeout == FOREVER:
        return FOREVER, 0
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) \
            and not math.isnan(timeout):
        problem = "is negative" if timeout < 0 else "is beyond what a request's deadline can say"
    else:
        problem = "is not a number of seconds"
    raise UserError(f"request timeout={timeout!r} {problem}",
                    fix="pass timeout=SECONDS (10 by default), or timeout=None to wait for "
                        "the reply without a deadline")


def timed_out(peer: str, topic: str, timeout: float) -> RequestTimeout:
    """What a request to ``peer`` on ``topic`` raises when ``timeout`` passed."""
    return RequestTimeout(f"no reply from {peer} to a {topic!r} request within {timeout:g}s")


def _no_loop() -> asyncio.Future[Any]:
    raise RuntimeError("no request was sent on this loop yet")
