"""The blocking face of a node, for scripts and notebooks: :func:`connect`.

The node runs on an event loop of its own in a background thread (anyio's blocking
portal); each call hands a coroutine to that loop and waits for its result. So it works
from plain code, from several threads at once, and from inside a running loop (a Jupyter
cell), whose loop is never the node's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from p2phost_sdk import Allow, App, Delivery, PeerInfo

from ._errors import LibraryError, NodeClosed
from ._handlers import HandlerFunc
from ._node import AsyncNode, open_node

_T = TypeVar("_T")
_F = TypeVar("_F", bound=HandlerFunc)


class BlockingNode:
    """A node with blocking methods (``with p2phost.connect(".") as node:``).

    The same node as :class:`AsyncNode` (handlers, apps, delivery modes, models); its
    handlers may be plain functions (they run in worker threads). After :meth:`close`
    every call raises :class:`NodeClosed`.
    """

    def __init__(self, node: AsyncNode) -> None:
        self.node = node
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()
        self._closed = False

    def handler(self, topic: str, *, delivery: Delivery | str | None = None,
                allow: Allow | None = None, model: type | None = None
                ) -> Callable[[_F], _F]:
        """As :meth:`AsyncNode.handler`; ``func`` may be a plain function (it runs in a
        worker thread)."""
        register = self.node.handler(topic, delivery=delivery, allow=allow, model=model)
        if self._portal is None:
            return register

        def on_the_loop(func: _F) -> _F:  # the node's state is its loop's alone
            async def registered() -> _F:
                return register(func)
            return self._call(registered)
        return on_the_loop

    def add_app(self, app: App) -> App:
        """As :meth:`AsyncNode.add_app`; before the node opens."""
        return self.node.add_app(app)

    # -- lifetime ------------------------------------------------------------------

    def __enter__(self) -> BlockingNode:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Start the node's loop thread and open the node on it."""
        with self._lock:
            if self._stack is not None or self._closed:
                raise NodeClosed("this node was opened already; a node opens once",
                                 fix="open a new one with p2phost.connect(...)")
            stack = contextlib.ExitStack()
            portal = stack.enter_context(start_blocking_portal(
                "asyncio", name=f"p2phost-node-{self.node.project.root.name}"))
            try:
                portal.call(self.node.open)
            except BaseException:
                stack.close()
                raise
            self._stack, self._portal = stack, portal

    def close(self) -> None:
        """Drain and close the node (as ``p2phost run`` on SIGTERM), stop its thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stack, portal = self._stack, self._portal
            self._stack = self._portal = None
        if portal is not None and stack is not None:
            try:
                portal.call(self.node.close)
            finally:
                stack.close()

    def _call(self, func: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        portal = self._portal
        if portal is None:
            raise NodeClosed("the node is closed" if self._closed else "the node is not open",
                             fix="use it inside `with p2phost.connect(...) as node:`")
        try:
            return portal.call(functools.partial(func, *args, **kwargs))
        except RuntimeError as exc:
            text = str(exc)
            if "event loop thread" in text:
                raise LibraryError(
                    "a blocking call from the node's own loop would wait for itself",
                    fix="in an async handler, await the AsyncNode (blocking_node.node) "
                        "instead") from None
            if "not running" in text:
                raise NodeClosed("the node is closed",
                                 fix="use it inside `with p2phost.connect(...) as node:`"
                                 ) from None
            raise

    def _get(self, func: Callable[[], _T]) -> _T:
        async def get() -> _T:
            return func()
        return self._call(get)

    # -- what a script asks --------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        return self.node.peer_id

    @property
    def addresses(self) -> list[str]:
        """The addresses the node really listens on."""
        return self._get(lambda: self.node.addresses)

    @property
    def topics(self) -> list[str]:
        """The topics this node handles."""
        return self._get(lambda: self.node.topics)

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        return self._get(self.node.peers)

    def stats(self) -> dict[str, Any]:
        """Counters per topic, mailboxes, connections."""
        return self._get(self.node.stats)

    def connect(self, address: str) -> str:
        """Dial ``address`` (or reuse the connection); returns the peer id."""
        return self._call(self.node.connect, address)

    def send(self, peer: str, topic: str, body: Any, *, key: str | None = None) -> None:
        """As :meth:`AsyncNode.send`."""
        self._call(self.node.send, peer, topic, body, key=key)

    def request(self, peer: str, topic: str, body: Any, *, timeout: float = 10.0,
                model: type | None = None) -> Any:
        """As :meth:`AsyncNode.request`: the reply, or RequestTimeout / RemoteError /
        PeerUnavailable."""
        return self._call(self.node.request, peer, topic, body, timeout=timeout, model=model)

    def publish(self, topic: str, body: Any) -> int:
        """As :meth:`AsyncNode.publish`; returns how many peers it went to."""
        return self._call(self.node.publish, topic, body)


def connect(project: str | os.PathLike[str] | None = None, *,
            manifest: Mapping[str, Any] | None = None,
            state_dir: str | os.PathLike[str] | None = None,
            apps: Sequence[App] = (), control: bool = True) -> BlockingNode:
    """The blocking node of a project directory or manifest mapping (the arguments of
    :func:`open_node`), not open yet: ``with p2phost.connect(".") as node:``."""
    return BlockingNode(open_node(project, manifest=manifest, state_dir=state_dir,
                                  apps=apps, control=control))
