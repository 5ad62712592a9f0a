"""The node calls what asyncio's own loop calls for ``time`` and ``create_future`` (no
Python frame per request), and the loop's own methods everywhere else."""

from __future__ import annotations

import asyncio
import time

from p2phost._runtime._loop import future_maker, loop_clock


async def test_asyncio_s_own_loop_gets_the_shortcuts() -> None:
    loop = asyncio.get_running_loop()
    assert loop_clock(loop) is time.monotonic
    assert future_maker(loop)().get_loop() is loop


async def test_a_clock_patched_on_the_loop_is_the_clock_used() -> None:
    """A virtual clock (a test harness sets ``loop.time``) must be what request deadlines
    are measured with, or the pending timer is armed in one clock and checked in another."""
    loop = asyncio.get_running_loop()

    def virtual() -> float:
        return time.monotonic() + 1000.0

    loop.time = virtual  # type: ignore[method-assign]
    try:
        assert loop_clock(loop) is virtual
    finally:
        del loop.time  # type: ignore[method-assign]
    assert loop_clock(loop) is time.monotonic
