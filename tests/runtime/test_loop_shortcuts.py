"""The node calls what asyncio's own loop calls for ``time`` and ``create_future`` (no
Python frame per request), and the loop's own methods everywhere else."""

from __future__ import annotations

import asyncio
import gc
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


def test_looking_for_a_patched_method_leaves_the_loop_s_attributes_in_place() -> None:
    """Reading ``loop.__dict__`` to look for a patched method made CPython build the
    loop's instance dict, after which every attribute read of the loop's own code (each
    turn of ``_run_once``) took the slow, unspecialized path: 9 % of a request's
    instructions on a p2phost server (docs/performance.md). The loop's attributes stay
    inline (the garbage collector then sees them one by one, not as one dict)."""
    loop = asyncio.new_event_loop()
    try:
        future_maker(loop)
        loop_clock(loop)
        assert not any(isinstance(referent, dict) and "_ready" in referent
                       for referent in gc.get_referents(loop))
    finally:
        loop.close()
