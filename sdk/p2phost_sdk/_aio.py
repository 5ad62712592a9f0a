"""The async toolkit the host, the inbox machinery and the plugins share.

asyncio as trio would have it: every background task has an owner that cancels and
awaits it (:class:`TaskOwner`); waits on someone else's code are bounded and say whose
code hung (:func:`with_timeout`); closing and cancelling never wait forever
(:func:`cancel_and_wait`, :func:`close_within`); reconnect delays back off with jitter
(:class:`Backoff`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from ._errors import PluginTimeout

T = TypeVar("T")
_log = logging.getLogger("p2phost")


class TaskOwner:
    """Background tasks with one owner, which cancels and awaits them all on ``close``.

    A task that fails is logged (never lost silently); a task that ignores its
    cancellation is waited for only up to ``close``'s timeout, then named in the log.
    """

    def __init__(self, name: str = "", *, logger: logging.Logger | None = None) -> None:
        self.name = name
        self._log = logger or _log
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned here."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("task %r failed", task.get_name(), exc_info=task.exception())

    async def close(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait (up to ``timeout`` seconds) until all have ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            left = deadline - loop.time()
            _, pending = await asyncio.wait(tasks, timeout=max(left, 0))
            if pending:
                self._log.error("%s: %d tasks did not stop within %gs of being cancelled: %s",
                                self.name or "tasks", len(pending), timeout,
                                ", ".join(sorted(t.get_name() for t in pending)))
                self._tasks.difference_update(pending)
                return

    async def __aenter__(self) -> TaskOwner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial * 2**attempt`` capped at ``maximum``; the wait is a
    random point in its upper half, so peers that lost each other at the same moment do
    not retry in step."""

    initial: float = 0.1
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (0 = the first retry)."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempt, 62))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def plugin_name(plugin: object) -> str:
    """How a user knows the plugin an object comes from: an object of the package
    ``p2phost_redis_transport`` is ``redis-transport``'s; others go by their class."""
    package = type(plugin).__module__.split(".")[0]
    if package.startswith("p2phost_") and package != "p2phost_sdk":
        return package.removeprefix("p2phost_").replace("_", "-")
    return type(plugin).__name__


async def with_timeout(work: Awaitable[T], timeout: float, *, plugin: str, doing: str,
                       fix: str = "") -> T:
    """Await ``work`` for up to ``timeout`` seconds; :class:`PluginTimeout` naming
    ``plugin`` and what it was ``doing`` when it does not finish in time."""
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        raise PluginTimeout(plugin, doing, timeout, fix=fix) from None


async def cancel_and_wait(task: asyncio.Task[Any], timeout: float = 5.0) -> bool:
    """Cancel ``task`` and wait up to ``timeout`` seconds for it to end; whether it did.

    Its outcome (an error included) is retrieved, so nothing is logged as never retrieved.
    """
    task.cancel()
    done, _ = await asyncio.wait((task,), timeout=timeout)
    if done and not task.cancelled():
        task.exception()
    return bool(done)


async def close_within(work: Awaitable[Any], timeout: float, *, plugin: str,
                       doing: str = "closing", logger: logging.Logger | None = None) -> bool:
    """Await a close (or stop) for up to ``timeout`` seconds; log a failure or a hang,
    naming ``plugin``, instead of raising. Whether it finished cleanly."""
    try:
        await with_timeout(work, timeout, plugin=plugin, doing=doing)
    except PluginTimeout as exc:
        (logger or _log).warning("%s", exc)
        return False
    except Exception as exc:
        (logger or _log).warning("%s failed %s: %s: %s", plugin, doing, type(exc).__name__, exc)
        return False
    return True
