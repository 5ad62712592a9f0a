"""The node's apps, each with its mailbox, and the topic routes into them.

Built once when the node opens (a topic handled by two apps is refused); routes added
later by a library program's late handlers; and what goes to every app's mailbox
rather than to one topic's: the peer lifecycle calls, a peer's departure, the drain.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from p2phost_sdk import App, permission_of

from .._errors import NodeConfigError
from ..wire._envelope import wire_name_problem
from ._mailbox import Direct, Mailbox
from ._routes import Route, Work

log = logging.getLogger("p2phost.node")

#: What an app's mailbox runs for each item: ``process(peer, item)``.
Process = Callable[[str, Work], Coroutine[Any, Any, None]]


def check_topic(topic: str, app: str) -> None:
    """Raise :class:`NodeConfigError` when ``topic`` of ``app`` cannot go on the wire:
    peers leave such a topic out of this node's hello, so none would ever send to it."""
    problem = wire_name_problem(topic)
    if problem is not None:
        shown = f"{topic[:60]!r}..." if len(topic) > 60 else repr(topic)
        raise NodeConfigError(
            f"app {app!r} handles topic {shown}, which peers cannot use: {problem}",
            fix="rename the topic: printable characters only (no newline, tab or other "
                "control character), not only spaces, at most 255 bytes in UTF-8, e.g. "
                "'orders.created'")


class AppMailboxes:
    """Each app with its mailbox, and ``routes``: topic -> where its messages go."""

    def __init__(self, apps: Iterable[App], process: Process,
                 direct: Direct[Work] | None = None) -> None:
        self._apps: list[tuple[App, Mailbox[Work]]] = []
        #: The dispatcher reads this very dict per message; :meth:`add_route` adds to it.
        self.routes: dict[str, Route] = {}
        owners: dict[str, str] = {}
        for app in apps:
            name = type(app).name or type(app).__name__
            mailbox: Mailbox[Work] = Mailbox(name, app.mailbox_size, process, direct,
                                              app.mailbox_bytes)
            self._apps.append((app, mailbox))
            for topic, handler in app.handlers().items():
                check_topic(topic, name)
                if topic in self.routes:
                    raise NodeConfigError(
                        f"topic {topic!r} is handled by two apps: {owners[topic]!r} and "
                        f"{name!r}", fix="remove one of the two app plugins from p2phost.toml")
                self.routes[topic] = Route(handler, mailbox, permission_of(handler))
                owners[topic] = name

    def add_route(self, app: App, topic: str,
                  handler: Callable[[Any], Awaitable[Any]]) -> None:
        """Route ``topic`` to ``handler`` through ``app``'s mailbox."""
        check_topic(topic, type(app).name or type(app).__name__)
        if topic in self.routes:
            raise NodeConfigError(f"topic {topic!r} has a handler on this node already",
                                  fix="register one handler per topic")
        mailbox = next((box for owner, box in self._apps if owner is app), None)
        if mailbox is None:
            raise NodeConfigError(f"app {type(app).__name__} is not one of this node's",
                                  fix="add the app before the node opens")
        self.routes[topic] = Route(handler, mailbox, permission_of(handler))

    def wrap_processing(self, wrap: Callable[[Process], Process]) -> None:
        """Put ``wrap(process)`` in place of what each mailbox runs per item (before
        any is queued: a message queued as its own item is for the mailbox's task)."""
        assert not any(len(mailbox) for _, mailbox in self._apps), "wrapped too late"
        for _, mailbox in self._apps:
            mailbox._process = wrap(mailbox._process)
            mailbox.direct = None  # what wraps processing sees every item

    def sizes(self) -> dict[str, dict[str, int]]:
        """Each app's mailbox: messages queued or being handled, and its size."""
        return {box.name: {"queued": len(box), "running": box.running, "size": box.size}
                for _, box in self._apps}

    def lifecycle(self, peer_id: str, method: str, *args: Any) -> None:
        """Queue ``App.method(*args)`` in each app's mailbox, in order with ``peer_id``'s
        messages."""
        for app, mailbox in self._apps:
            call = functools.partial(getattr(app, method), *args)
            mailbox.put_nowait(peer_id, Work(call))

    def busy_with(self, peer_id: str) -> bool:
        """Whether a mailbox holds or handles something of ``peer_id``'s."""
        return any(mailbox.busy_with(peer_id) for _, mailbox in self._apps)

    def peer_gone(self, peer_id: str) -> None:
        """Forget ``peer_id`` in every mailbox."""
        for _, mailbox in self._apps:
            mailbox.peer_gone(peer_id)

    async def drain(self, timeout: float, drain_timeout: float | None = None) -> None:
        """Handle what the mailboxes hold (all of them at once, up to ``timeout``), then
        stop them. ``drain_timeout``: the whole shutdown drain's, of which ``timeout`` is
        what is left; the log names it (``timeout`` unless given)."""
        lefts = await asyncio.gather(*(mailbox.close(timeout) for _, mailbox in self._apps))
        for (_, mailbox), left in zip(self._apps, lefts, strict=True):
            if left:
                log.warning("app %s: %d messages were not handled within the %gs drain "
                            "timeout", mailbox.name, left,
                            timeout if drain_timeout is None else drain_timeout)


async def lifecycle_call(func: Callable[[], Awaitable[Any]]) -> None:
    """Run a queued lifecycle call; its failure is logged, never raised."""
    try:
        await func()
    except Exception:
        log.exception("app lifecycle call %r failed", func)
