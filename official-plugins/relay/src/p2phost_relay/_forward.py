"""One direction of one relayed circuit: its frames queued for the far end, and the task
that sends them.

The relay app's handler only queues a frame here and returns, so the app's mailbox (shared
by every peer of the relay) never waits for a far end: a far end that does not read holds
up its own circuit only. The queue is bounded in bytes; a frame that would pass the bound,
or a send that takes longer than the forward timeout, fails the circuit (the service
closes it at both ends, with the reason, and counts it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from p2phost_sdk import TaskOwner

from ._hop import End, HopCircuit

#: Sends one relay-topic body to the far end (None: the far end pulls its frames).
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: Closed circuits of pullers whose reason a relay keeps for their next pull.
ENDED_KEPT = 256
#: Sends one relay-topic body to a peer.
SendTo = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Called when a circuit fails: the end whose frames failed, the counter's reason, and the
#: reason for the ends.
Failed = Callable[[End, str, str], None]


class Forwards:
    """The relay's circuits, each direction forwarded on its own (by the end its frames
    come from)."""

    def __init__(self, send: SendTo, *, limit: int, timeout: float, tasks: TaskOwner,
                 on_fail: Failed, total: int | None = None) -> None:
        self._send = send
        self._limit = limit
        #: Bytes queued over every circuit at most (None: no bound but each circuit's).
        #: Each circuit's bound alone let 256 circuits whose far ends do not read hold
        #: 256 x buffer-bytes (1 GiB by default) on the relay.
        self._total = total
        #: Bytes queued now, over every circuit.
        self.total = 0
        self._timeout = timeout
        self._tasks = tasks
        self._on_fail = on_fail
        self._forwards: dict[End, Forward] = {}
        #: Ends that take their frames with ``pull`` requests (a client node, which is
        #: never sent messages, only replies), with when each last pulled (loop time).
        self.pullers: dict[End, float] = {}
        #: Why the circuits of pullers ended, for their next pull (the latest few).
        self.ended: dict[End, str] = {}

    def put(self, end: End, other: End, body: dict[str, Any], size: int) -> None:
        """Queue a frame from ``end`` for ``other`` (failing the circuit past the bound)."""
        forward = self._forwards.get(end)
        if forward is None:
            async def send(body: dict[str, Any]) -> None:
                await self._send(other.peer, body)

            forward = self._forwards[end] = Forward(
                None if other in self.pullers else send, limit=self._limit,
                timeout=self._timeout, tasks=self._tasks,
                name=f"relay forward {end.circuit}",
                on_fail=lambda why, reason: self._on_fail(end, why, reason),
                account=self._account)
        forward.put(body, size)
        while self._total is not None and self.total > self._total:
            # Over the relay's bound: the circuit holding the most unread bytes goes (the
            # one whose far end reads least), not the newcomer.
            fullest = max(self._forwards.values(), key=lambda f: f.queued)
            if not fullest.queued:
                break
            fullest.fail("not read", f"the relay's buffers are full ({self._total} bytes "
                         f"over every circuit) and this circuit's far end took least: "
                         f"{fullest.queued} bytes unread")

    def _account(self, delta: int) -> None:
        self.total += delta

    def take(self, end: End, puller: End) -> list[str]:
        """The frames (base64) queued from ``end`` for ``puller``, no longer queued."""
        self.pullers[puller] = asyncio.get_running_loop().time()
        forward = self._forwards.get(end)
        return [] if forward is None else forward.take()

    def pop(self, end: End) -> Forward | None:
        """The forwarding of frames from ``end``, no longer kept here."""
        return self._forwards.pop(end, None)

    def gone(self, after: float) -> list[End]:
        """Pullers that have not pulled for ``after`` seconds (a client that died: a relay
        is not told when a client's connection ends)."""
        now = asyncio.get_running_loop().time()
        return [end for end, last in self.pullers.items() if now - last > after]

    def queued(self) -> int:
        """Bytes waiting for far ends, over every circuit."""
        return sum(f.queued for f in self._forwards.values())

    def closed(self, circuit: HopCircuit) -> None:
        """The hop forgot ``circuit``: stop forwarding it both ways."""
        for end in (circuit.dialler, circuit.target):
            if self.pullers.pop(end, None) is not None:
                self.ended[end] = "the circuit is closed"
                while len(self.ended) > ENDED_KEPT:
                    del self.ended[next(iter(self.ended))]
            forward = self._forwards.pop(end, None)
            if forward is not None:
                forward.stop()


class Forward:
    """Frames from one end of a circuit to the other, in order, within ``limit`` bytes."""

    def __init__(self, send: Send | None, *, limit: int, timeout: float, tasks: TaskOwner,
                 name: str, on_fail: Callable[[str, str], None],
                 account: Callable[[int], None] | None = None) -> None:
        self._send = send
        #: Told of every change of :attr:`queued` (the relay's total over its circuits).
        self._account = account or (lambda delta: None)
        self._limit = limit
        self._timeout = timeout
        self._tasks = tasks
        self._name = name
        #: Called once with ``(counter reason, reason for the ends)`` when the circuit fails.
        self._on_fail = on_fail
        self._queue: deque[tuple[dict[str, Any], int]] = deque()
        self.queued = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def put(self, body: dict[str, Any], size: int) -> bool:
        """Queue ``body`` (``size`` bytes of frame) for the far end; False, having failed
        the circuit, when the far end already has ``limit`` bytes it has not taken."""
        if self._stopped:
            return False
        if self._queue and self.queued + size > self._limit:
            self.fail("not read", f"the far end did not take {self.queued} bytes "
                      f"(the relay buffers at most {self._limit} per circuit)")
            return False
        self._queue.append((body, size))
        self.queued += size
        self._account(size)
        if self._task is None and self._send is not None:
            self._task = self._tasks.spawn(self._run(), self._name)
        return True

    def take(self) -> list[str]:
        """What a puller takes: every queued frame's data, in order (sent by no task)."""
        taken = [body["data"] for body, _ in self._queue if body.get("op") == "data"]
        self._queue.clear()
        self._account(-self.queued)
        self.queued = 0
        return taken

    def finish(self, body: dict[str, Any]) -> None:
        """Send ``body`` (a close) after what is queued, then stop."""
        if not self._stopped:
            self._queue.append((body, 0))
            if self._task is None and self._send is not None:
                self._task = self._tasks.spawn(self._run(), self._name)
            self._stopped = True

    def fail(self, why: str, reason: str) -> None:
        """Stop, and have the circuit closed for ``why`` (the counter) and ``reason``."""
        self.stop()
        self._on_fail(why, reason)

    def stop(self) -> None:
        """Drop what is queued and end the task (the circuit is over)."""
        self._stopped = True
        self._queue.clear()
        self._account(-self.queued)
        self.queued = 0
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _run(self) -> None:
        assert self._send is not None
        try:
            while self._queue:
                body, size = self._queue[0]
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._send(body)
                except Exception as exc:  # the far end is gone, or does not read
                    if not self._queue:  # stopped meanwhile
                        return
                    self.stop()
                    self._on_fail("forward failed", f"could not forward within "
                                  f"{self._timeout:g}s: {exc or 'timed out'}")
                    return
                if self._queue and self._queue[0][0] is body:
                    self._queue.popleft()
                    self.queued -= size
                    self._account(-size)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
