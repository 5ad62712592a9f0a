"""Handlers a program registers on its node (``@node.handler("topic")``): one in-process
app holds them, so they get what app plugins get — a bounded mailbox, one message at a
time per peer, delivery modes, ``allow=`` and ``model=``.

A handler takes the :class:`~p2phost_sdk.Message` and may be ``async def`` or a plain
function; a plain one runs in one of the node's worker threads, so it never blocks the
node's loop. A thread cannot be cancelled: at close the node stops waiting for it, and
its threads are daemons, so one still running does not keep the program from exiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import itertools
import queue
import threading
import types
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, cast

from p2phost_sdk import Allow, App, Delivery, Handler, Message, handler

from .._errors import UserError
from .._runtime import check_topic
from ._errors import HandlerError

#: What ``node.handler`` decorates: ``async def f(message)`` or ``def f(message)``.
HandlerFunc = Callable[[Message], Any]


#: Plain-function handlers running at once in one node (more wait for a free thread).
WORKERS = 16

_names = itertools.count(1)


class Workers(Executor):
    """Daemon threads for plain-function handlers, which the node shuts down at close.

    Not a ``ThreadPoolExecutor``: ``asyncio.run`` waits for its default executor, and the
    interpreter joins every ``ThreadPoolExecutor`` worker at exit, so one hung handler
    would keep the program from ever exiting. These threads are daemons nobody joins.
    """

    def __init__(self, limit: int = WORKERS) -> None:
        self._limit = limit
        self._prefix = f"p2phost-handler-{next(_names)}"
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = \
            queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker thread."""
        with self._lock:
            if self._shut:
                raise RuntimeError("the node is closed: no handler starts after close")
            future: Future[Any] = Future()
            self._work.put((future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._limit:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"{self._prefix}_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # the handler's error goes to its awaiter
                    future.set_exception(exc)
            del item, future, call  # (the message is not kept alive while idle)
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more work; idle threads end, busy ones end when their handler returns."""
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()


def as_async(func: HandlerFunc, workers: Executor) -> Handler:
    """``func`` as a coroutine function; a plain one runs in one of ``workers``."""
    if inspect.iscoroutinefunction(func):
        # A function of its own: marking it for a topic leaves the caller's untouched.
        if type(func) is types.FunctionType:
            # The same code in a new function object, rather than a wrapper: no coroutine
            # (and frame) more per message.
            own = types.FunctionType(func.__code__, func.__globals__, func.__name__,
                                     func.__defaults__, func.__closure__)
            own.__kwdefaults__ = func.__kwdefaults__
            return cast(Handler, functools.update_wrapper(own, func))

        @functools.wraps(func)
        async def direct(message: Message) -> Any:  # (a bound method, a callable object)
            return await func(message)

        return direct

    @functools.wraps(func)
    async def in_thread(message: Message) -> Any:
        # (as asyncio.to_thread: the handler sees the caller's context variables)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            workers, context.run, func, message)

    return in_thread


class InProcessApp(App):
    """The handlers registered on one library node, as one app."""

    name = "in-process"

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._deliveries: dict[str, Delivery] = {}
        #: Where plain-function handlers run; shut down (not waited for) at close.
        self.workers = Workers()

    def add(self, topic: str, func: HandlerFunc, *, delivery: Delivery | str | None,
            allow: Allow | None, model: type | None) -> Handler:
        """Register ``func`` for ``topic`` (marked like an app plugin's handler)."""
        if topic in self._handlers:
            raise HandlerError(f"topic {topic!r} has a handler on this node already",
                               fix="register one handler per topic")
        try:  # at the decorator, not when the node opens
            check_topic(topic, self.name)
        except UserError as exc:
            raise HandlerError(exc.message, fix=exc.fix) from None
        marked = handler(topic, delivery=delivery, allow=allow,
                         model=model)(as_async(func, self.workers))
        self._handlers[topic] = marked
        policy = getattr(marked, "__p2phost_delivery__", None)
        if isinstance(policy, Delivery):
            self._deliveries[topic] = policy
        return marked

    def remove(self, topic: str) -> None:
        """Forget ``topic``'s handler (its registration failed)."""
        self._handlers.pop(topic, None)
        self._deliveries.pop(topic, None)

    def handlers(self) -> dict[str, Handler]:
        """The registered handlers, by topic."""
        return dict(self._handlers)

    def deliveries(self) -> dict[str, Delivery]:
        """The delivery declared with each handler."""
        return dict(self._deliveries)
