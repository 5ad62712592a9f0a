"""An on-path attacker for the security kit: forwards frames between two ends, and
flips, replays, drops or reorders the ones it is told to."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._errors import ConnectionClosed
from .._transport import Connection
from ._memory import memory_pipe

#: What an on-path attacker can do to the next frame: flip a byte of it, deliver it
#: twice, drop it, or hold it back until the frame after it has passed.
TAMPERING = ("flip", "replay", "drop", "reorder")


class Relay:
    """An on-path attacker between ``a`` (the initiator's end) and ``b``.

    It forwards every frame both ways, and applies the actions :meth:`tamper` queued for
    a direction to the next frames going that way. A close on one side is passed on.
    """

    def __init__(self, max_frame_size: int) -> None:
        self.a, self._near_a = memory_pipe(max_frame_size=max_frame_size, name="relay-a")
        self._near_b, self.b = memory_pipe(max_frame_size=max_frame_size, name="relay-b")
        self._plans: dict[str, deque[str]] = {"a->b": deque(), "b->a": deque()}

    def tamper(self, direction: str, action: str) -> None:
        """Apply ``action`` (one of :data:`TAMPERING` or ``"pass"``) to the next frame."""
        if action not in (*TAMPERING, "pass"):
            raise ValueError(f"unknown action {action!r}")
        self._plans[direction].append(action)

    async def _forward(self, source: Connection, target: Connection, direction: str) -> None:
        plan = self._plans[direction]
        held: list[bytes] = []
        try:
            while True:
                frame = await source.recv()
                action = plan.popleft() if plan else "pass"
                if action == "flip":
                    middle = len(frame) // 2
                    frame = frame[:middle] + bytes([frame[middle] ^ 0x01]) + frame[middle + 1:]
                if action == "reorder":
                    held = [frame]  # it goes out right after the next frame
                    continue
                out = {"replay": [frame, frame], "drop": []}.get(action, [frame]) + held
                held = []
                if out:
                    await target.send_many(out)
        except ConnectionClosed:
            pass
        finally:
            await target.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        """Forward while inside the block; stop and close everything on leaving it."""
        tasks = [
            asyncio.create_task(self._forward(self._near_a, self._near_b, "a->b")),
            asyncio.create_task(self._forward(self._near_b, self._near_a, "b->a")),
        ]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for end in (self.a, self._near_a, self._near_b, self.b):
                await end.close()
