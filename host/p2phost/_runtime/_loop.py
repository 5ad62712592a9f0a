"""The event loop ``p2phost run`` runs a node on: uvloop where it is installed, else asyncio's.

uvloop is asyncio's event loop written over libuv in C: the same asyncio API, with the
loop's own work per turn (polling, scheduling callbacks, socket reads and writes) done
outside Python. benchmarks/messaging.py measures p2phost on both, in one run; on uvloop
a node spends less CPU per message and per request (docs/performance.md has the
figures). ``[node] event-loop`` in p2phost.toml chooses: ``"auto"`` (the default: uvloop
when it can be imported, which p2phost's own requirements arrange on Linux and macOS),
``"uvloop"`` (required: an error when missing) or ``"asyncio"`` (the standard loop).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._errors import NodeConfigError

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str = "auto") -> tuple[str, LoopFactory | None]:
    """The loop ``choice`` names, as (what it is, a factory; None for asyncio's own)."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise NodeConfigError(
                '[node] event-loop = "uvloop" in p2phost.toml, but uvloop is not installed',
                fix='pip install uvloop (or event-loop = "auto" to fall back to asyncio\'s '
                    "loop)") from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """Run ``main`` to completion on a new loop from ``factory`` (asyncio's when None)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# asyncio's own loop, whose ``time`` and ``create_future`` are Python methods around a
# C call: a node calls them per request, so it calls what they call instead.
_BASE = asyncio.BaseEventLoop


def _is_base(loop: asyncio.AbstractEventLoop, name: str) -> bool:
    # Not when the method is set on the loop object itself (a virtual clock in a test
    # harness patches ``loop.time``): then the loop's own is called. (Found through the
    # bound method, never ``loop.__dict__``: on CPython 3.11 reading that builds the
    # instance dict, and every attribute read in the loop's own code is then slow.)
    return getattr(getattr(loop, name, None), "__func__", None) is getattr(_BASE, name)


def future_maker(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Future[Any]]:
    """``loop.create_future``, or on asyncio's own loop what it calls (no Python frame)."""
    if _is_base(loop, "create_future"):
        return functools.partial(asyncio.Future, loop=loop)
    return loop.create_future


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or on asyncio's own loop what it calls: ``time.monotonic``."""
    return time.monotonic if _is_base(loop, "time") else loop.time
