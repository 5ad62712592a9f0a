"""The blocking face of a node, for scripts and notebooks: :func:`connect`.

The node runs on an event loop of its own in a background thread (anyio's blocking
portal); each call hands a coroutine to that loop and waits for its result. So it works
from plain code, from several threads at once, and from inside a running loop (a Jupyter
cell), whose loop is never the node's.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import importlib.util
import os
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from p2phost_sdk import Allow, App, Delivery, PeerInfo

from ._errors import LibraryError, NodeClosed
from ._handlers import HandlerFunc
from ._node import AsyncNode, open_node

if TYPE_CHECKING:
    from p2phost_sdk import Identity

_T = TypeVar("_T")
# The node's own loop: uvloop where it is installed (p2phost depends on it off Windows)
# wakes for each blocking call in about two thirds of the time asyncio's loop takes;
# [node] event-loop = "asyncio" in the manifest keeps asyncio's.
_HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock = threading.Lock()
        # Calls waiting for the loop: (their lock, their outcome), by the lock's id.
        self._waiting: dict[int, tuple[Any, list[Any]]] = {}
        self._closed = False

    def handler(self, topic: str, *, delivery: Delivery | str | None = None,
                allow: Allow | None = None, model: type | None = None
                ) -> Callable[[_F], _F]:
        """As :meth:`AsyncNode.handler`; ``func`` may be a plain function (it runs in a
        worker thread)."""
        register = self.node.handler(topic, delivery=delivery, allow=allow, model=model)
        if self._loop is None:
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
            # [node] event-loop, as `p2phost run` reads it (auto: uvloop where installed).
            wanted = self.node.project.manifest.node.event_loop
            uvloop = wanted == "uvloop" or (wanted == "auto" and _HAS_UVLOOP)
            stack = contextlib.ExitStack()
            portal = stack.enter_context(start_blocking_portal(
                "asyncio", {"use_uvloop": uvloop},
                name=f"p2phost-node-{self.node.project.root.name}"))
            try:
                portal.call(self.node.open)
                self._loop = portal.call(asyncio.get_running_loop)
                self._loop_thread = portal.call(threading.get_ident)
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
            self._loop = None
        if portal is not None and stack is not None:
            try:
                portal.call(self.node.close)
            finally:
                stack.close()
                # A call that reached the loop as it stopped never finishes: free its caller.
                with self._lock:
                    for done, outcome in self._waiting.values():
                        if not outcome:
                            outcome.append(_closed())
                            done.release()
                    self._waiting.clear()

    def _call(self, func: Callable[..., Coroutine[Any, Any, _T]], *args: Any,
              **kwargs: Any) -> _T:
        loop = self._loop
        if loop is None:
            raise NodeClosed("the node is closed" if self._closed else "the node is not open",
                             fix="use it inside `with p2phost.connect(...) as node:`")
        if threading.get_ident() == self._loop_thread:
            raise LibraryError(
                "a blocking call from the node's own loop would wait for itself",
                fix="in an async handler, await the AsyncNode (blocking_node.node) instead")
        # The portal runs the loop; each call hops onto it with a bare lock, not through
        # portal.call: a round trip costs a third of what the portal's machinery does.
        done = _thread.allocate_lock()
        done.acquire()
        outcome: list[asyncio.Task[_T] | BaseException] = []

        def finished(task: asyncio.Task[_T]) -> None:
            outcome.append(task)
            done.release()

        def begin() -> None:
            try:
                task: asyncio.Task[_T] = loop.create_task(func(*args, **kwargs))
            except BaseException as exc:  # the call itself failed (wrong arguments)
                outcome.append(exc)
                done.release()
                return
            started.append(task)
            task.add_done_callback(finished)

        started: list[asyncio.Task[_T]] = []
        with self._lock:
            self._waiting[id(done)] = (done, outcome)
        try:
            try:
                loop.call_soon_threadsafe(begin)
            except RuntimeError:  # the loop stopped: the node was closed meanwhile
                raise _closed() from None
            try:
                done.acquire()
            except BaseException:  # Ctrl-C (a notebook's interrupt): stop the call, go
                if started:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(started[0].cancel)
                raise
        finally:
            with self._lock:
                self._waiting.pop(id(done), None)
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        if result.cancelled():  # the loop stopped under it
            raise _closed()
        return result.result()

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

    def request(self, peer: str, topic: str, body: Any, *, timeout: float | None = 10.0,
                model: type | None = None) -> Any:
        """As :meth:`AsyncNode.request`: the reply, or RequestTimeout / RemoteError /
        PeerUnavailable."""
        return self._call(self.node.request, peer, topic, body, timeout=timeout, model=model)

    def publish(self, topic: str, body: Any) -> int:
        """As :meth:`AsyncNode.publish`; returns how many peers it went to."""
        return self._call(self.node.publish, topic, body)

    def disconnect(self, peer: str, *, reason: str = "closed by the program") -> bool:
        """As :meth:`AsyncNode.disconnect`; False when no connection was open."""
        return self._call(self.node.disconnect, peer, reason=reason)


def _closed() -> NodeClosed:
    return NodeClosed("the node is closed",
                      fix="use it inside `with p2phost.connect(...) as node:`")


def connect(project: str | os.PathLike[str] | None = None, *,
            manifest: Mapping[str, Any] | None = None,
            state_dir: str | os.PathLike[str] | None = None,
            apps: Sequence[App] = (), control: bool = True,
            identity: Identity | None = None, name: str | None = None,
            keep_state: bool = True, codecs: Sequence[str] = (),
            fallback_apps: Sequence[App] = ()) -> BlockingNode:
    """The blocking node of a project directory or manifest mapping (the arguments of
    :func:`open_node`, ``identity``, ``name``, ``keep_state``, ``codecs`` and
    ``fallback_apps`` included), not open yet: ``with p2phost.connect(".") as node:``."""
    return BlockingNode(open_node(project, manifest=manifest, state_dir=state_dir,
                                  apps=apps, control=control, identity=identity, name=name,
                                  keep_state=keep_state, codecs=codecs,
                                  fallback_apps=fallback_apps))
