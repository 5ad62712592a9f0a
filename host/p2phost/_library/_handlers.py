"""Handlers a program registers on its node (``@node.handler("topic")``): one in-process
app holds them, so they get what app plugins get — a bounded mailbox, one message at a
time per peer, delivery modes, ``allow=`` and ``model=``.

A handler takes the :class:`~p2phost_sdk.Message` and may be ``async def`` or a plain
function; a plain one runs in a worker thread, so it never blocks the node's loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from p2phost_sdk import Allow, App, Delivery, Handler, Message, handler

from .._errors import UserError
from .._runtime import check_topic
from ._errors import HandlerError

#: What ``node.handler`` decorates: ``async def f(message)`` or ``def f(message)``.
HandlerFunc = Callable[[Message], Any]


def as_async(func: HandlerFunc) -> Handler:
    """``func`` as a coroutine function; a plain one runs in a worker thread."""
    if inspect.iscoroutinefunction(func):
        # A function of its own: marking it for a topic leaves the caller's untouched.
        @functools.wraps(func)
        async def direct(message: Message) -> Any:
            return await func(message)

        return direct

    @functools.wraps(func)
    async def in_thread(message: Message) -> Any:
        return await asyncio.to_thread(func, message)

    return in_thread


class InProcessApp(App):
    """The handlers registered on one library node, as one app."""

    name = "in-process"

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._deliveries: dict[str, Delivery] = {}

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
        marked = handler(topic, delivery=delivery, allow=allow, model=model)(as_async(func))
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
