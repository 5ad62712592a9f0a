"""A project's node in any asyncio program: :func:`open_node` and :class:`AsyncNode`.

The node is the one ``p2phost run`` builds (``node_for_project``: the manifest's plugins,
the project's identity, trust and state), with the program's handlers as one more app.
Opening it starts it as ``run`` does, control socket included (so ``p2phost peers``
sees it); closing drains it as ``run`` does on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tomlkit

from p2phost_sdk import Allow, App, BodyInvalid, Delivery, PeerInfo, contract_of, to_builtins

from .._errors import PluginLoadError, UserError
from .._manifest import MANIFEST_NAME
from .._project import PROGRAM_HEADER, PROGRAM_LINE, Project
from .._runtime import ControlServer, Node
from .._runtime.node._options import Overrides
from ._errors import HandlerError, IdentityInUse, LibraryError, NodeClosed
from ._handlers import HandlerFunc, InProcessApp
from ._missing import missing_plugin_fix

if TYPE_CHECKING:  # the crypto libraries load only when a node opens
    from p2phost_sdk import Identity

log = logging.getLogger("p2phost.library")
_F = TypeVar("_F", bound=HandlerFunc)

# Peer ids of the nodes open in this process: a second node of one identity would make
# its peers drop one connection for the other, back and forth.
_open_ids: dict[str, str] = {}
_open_lock = threading.Lock()


def project_of(project: str | os.PathLike[str] | None, manifest: Mapping[str, Any] | None,
               state_dir: str | os.PathLike[str] | None) -> Project:
    """The project a node is opened from: a directory (or a parent holding its
    p2phost.toml), or a manifest mapping written into ``state_dir``."""
    if manifest is None:
        if state_dir is not None:
            raise LibraryError("state_dir goes with manifest=: a project directory keeps its "
                               "state in its own .p2phost/",
                               fix="open_node(PROJECT_DIR), or open_node(manifest={...}, "
                                   "state_dir=DIR)")
        return Project.find(Path(project) if project is not None else None)
    if project is not None or state_dir is None:
        raise LibraryError("a manifest mapping needs a state_dir (where the node keeps its "
                           "identity and state) and no project directory",
                           fix="open_node(manifest={...}, state_dir=DIR)")
    root = Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        text = tomlkit.dumps(dict(manifest))
    except Exception as exc:  # tomlkit refuses values TOML cannot hold
        raise LibraryError(f"the manifest mapping cannot be written as TOML: {exc}",
                           fix="use only strings, numbers, booleans, lists and tables") from exc
    target = root / MANIFEST_NAME
    if not _written_by_open_node(target):
        raise LibraryError(
            f"{target} exists and open_node(manifest=...) did not write it (it lacks "
            "the header open_node writes): the manifest mapping would overwrite it",
            fix=f"open_node({str(root)!r}) without manifest= runs that project as it is; "
                "or give the mapping a state_dir of its own")
    # Written as a file, the manifest is checked (and its errors placed) like any other;
    # its header names the program, so the CLI's fixes start the node with its handlers.
    target.write_text(f"{PROGRAM_HEADER}{PROGRAM_LINE}{_program()}\n{text}", encoding="utf-8")
    return Project(root)


def _written_by_open_node(path: Path) -> bool:
    """Whether ``path`` is absent or a manifest open_node wrote (its first line is the
    program header), so writing it clobbers nothing of the user's."""
    try:
        with path.open("rb") as manifest:
            first = manifest.readline(len(PROGRAM_HEADER.encode()) + 1)
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise LibraryError(f"cannot read {path}: {exc.strerror or exc}",
                           fix="pick a state_dir this program can read and write") from None
    return first == PROGRAM_HEADER.encode()


def _program() -> str:
    """This program, as a user would start it again: its script's path when it has one."""
    main = sys.argv[0] if sys.argv else ""
    if main in ("", "-c", "-m") or not Path(main).is_file():
        return f"the Python program of process {os.getpid()}"
    return str(Path(main).resolve()).replace("\n", " ")


class AsyncNode:
    """A p2phost node opened by a program (``async with open_node(...) as node``).

    Register handlers (``@node.handler``) and apps (``node.add_app``) before it opens,
    then send, request and publish as an app does. A handler registered while it runs
    (at-most-once only) reaches the peers that connect from then on: peers connected
    already do not know the topic, so their ``publish`` passes this node by. Every
    method that touches the network raises :class:`NodeClosed` before ``open`` and after
    ``close``.
    """

    def __init__(self, project: Project, *, apps: Sequence[App] = (),
                 control: bool = True, from_mapping: bool = False,
                 overrides: Overrides = Overrides()) -> None:
        self.project = project
        self._overrides = overrides
        self._from_mapping = from_mapping
        self._handlers = InProcessApp()
        self._apps: list[App] = [*apps]
        self._control_wanted = control
        self._control: ControlServer | None = None
        self._node: Node | None = None
        self._state = "new"
        self._peer_id: str | None = None

    # -- before it opens -----------------------------------------------------------

    def handler(self, topic: str, *, delivery: Delivery | str | None = None,
                allow: Allow | None = None, model: type | None = None
                ) -> Callable[[_F], _F]:
        """Decorate ``async def f(message)`` (or a plain ``def``: it runs in a thread) as
        the handler of ``topic``, with the options of :func:`p2phost_sdk.handler`:
        ``delivery`` mode, ``allow`` (who may call), ``model`` (the body's contract)."""
        def register(func: _F) -> _F:
            if self._state == "new":
                self._handlers.add(topic, func, delivery=delivery, allow=allow, model=model)
                return func
            node = self.running
            if delivery is not None and Delivery.of(delivery).acknowledged:
                raise HandlerError(
                    f"an acknowledged topic ({topic!r}) is part of the node's delivery "
                    "state, fixed when it opens",
                    fix="register it first: node = p2phost.open_node(...); "
                        "@node.handler(...); then `async with node:`")
            marked = self._handlers.add(topic, func, delivery=None, allow=allow, model=model)
            try:
                node.add_handler(self._handlers, topic, marked)
            except UserError as exc:
                self._handlers.remove(topic)
                raise HandlerError(exc.message, fix=exc.fix) from None
            return func
        return register

    def add_app(self, app: App) -> App:
        """Run ``app`` (an :class:`p2phost_sdk.App`, as a plugin would give) in this node."""
        self._before_open("add an app")
        if not isinstance(app, App):
            raise HandlerError(f"{app!r} is not a p2phost_sdk.App",
                               fix="subclass p2phost_sdk.App and pass an instance")
        self._apps.append(app)
        return app

    def _before_open(self, doing: str) -> None:
        if self._state != "new":
            raise HandlerError(
                f"cannot {doing} on a node that is {self._state}: handlers and apps are "
                "part of the node's hello, fixed when it opens",
                fix="register them first: node = p2phost.open_node(...); "
                    "@node.handler(...); then `async with node:`")

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> AsyncNode:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Load the plugins, start the node (listen, discovery, apps)."""
        if self._state != "new":
            raise NodeClosed(f"this node is {self._state}; a node opens once",
                             fix="open a new one with p2phost.open_node(...)")
        self._state = "opening"
        try:
            await self._open()
        except PluginLoadError as exc:
            await self.close()
            if not self._from_mapping or exc.fix is None or exc.missing is None:
                raise
            # A program without a project: its plugins may come from its own environment.
            raise PluginLoadError(exc.message, fix=await asyncio.to_thread(
                missing_plugin_fix, self.project, exc.missing)) from exc
        except BaseException:
            await self.close()
            raise
        self._state = "open"

    async def _open(self) -> None:
        from .._runtime.node._assemble import node_for_project

        # The handlers' app is there even without handlers: ones registered later join it.
        apps = [*self._apps, self._handlers]
        # Reading the manifest and loading plugins touches the disk: off the loop.
        identity = self._overrides.identity
        if identity is None:
            identity = await asyncio.to_thread(self.project.identity)
        self._claim(identity.peer_id)
        self._node = await asyncio.to_thread(node_for_project, self.project, apps=apps,
                                             overrides=self._overrides)
        if self._control_wanted:
            self._control = ControlServer(self._node, self.project.control_socket)
            await self._control.start()
        await self._node.start()

    def _claim(self, peer_id: str) -> None:
        with _open_lock:
            if peer_id in _open_ids:
                raise IdentityInUse(peer_id, _open_ids[peer_id])
            _open_ids[peer_id] = str(self.project.root)
            self._peer_id = peer_id

    async def close(self) -> None:
        """Drain and close as ``p2phost run`` does on SIGTERM: goodbyes to peers, every
        mailbox handled (replies still go out), acknowledged messages flushed."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            if self._node is not None:
                await self._node.close()
        finally:
            # Plain-function handlers still running past the drain are not waited for:
            # a thread cannot be cancelled, and waiting would keep the program from exiting.
            self._handlers.workers.shutdown(wait=False, cancel_futures=True)
            if self._control is not None:
                await self._control.close()
            if self._peer_id is not None:
                with _open_lock:
                    _open_ids.pop(self._peer_id, None)

    @property
    def running(self) -> Node:
        """The runtime node (raises :class:`NodeClosed` unless open)."""
        if self._state != "open" or self._node is None:
            raise NodeClosed(
                "the node is closed" if self._state == "closed" else
                f"the node is not open ({self._state})",
                fix="use it inside `async with p2phost.open_node(...) as node:`")
        return self._node

    # -- what a program asks -------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's peer id (its ``identity=``, or the project's identity)."""
        return self._peer_id or (self._overrides.identity or self.project.identity()).peer_id

    @property
    def addresses(self) -> list[str]:
        """The addresses the node really listens on (port 0 and inboxes resolved)."""
        return self.running.addresses

    @property
    def topics(self) -> list[str]:
        """The topics this node handles (its handlers' and its apps')."""
        return self.running.topics

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        return self.running.peers()

    def app(self, name: str) -> App:
        """The running app called ``name`` (its ``App.name``, such as ``"gossip"``): how a
        program reaches an app plugin's own API, ``node.app("gossip").publish(...)``.

        A plugin's modules live in the project's ``.p2phost/`` environment, which only
        opening the node puts on ``sys.path``; this needs no import of them.
        """
        apps = {type(a).name or type(a).__name__: a for a in self.running.apps}
        if name not in apps:
            names = ", ".join(sorted(n for n in apps if n != InProcessApp.name)) or "none"
            raise LibraryError(f"no app called {name!r} runs in this node (its apps: {names})",
                               fix=f"p2phost plugin install {name} (it adds the plugin to "
                                   "p2phost.toml's [plugins]), then open the node again")
        return apps[name]

    def stats(self) -> dict[str, Any]:
        """Counters per topic (sent, handled, failed, dropped...), mailboxes, connections."""
        return self.running.stats()

    async def connect(self, address: str) -> str:
        """Dial ``address`` (or reuse the connection to it); returns the peer id."""
        return await self.running.connect(address)

    async def send(self, peer: str, topic: str, body: Any, *, key: str | None = None) -> None:
        """Deliver ``body`` (data or a model instance) on ``topic`` to ``peer`` (a peer id
        or an address), no reply; on acknowledged topics, once it is in the outbox."""
        _check_topic(topic, "send")
        await self.running.send(peer, topic, to_builtins(body), key=key)

    async def request(self, peer: str, topic: str, body: Any, *,
                      timeout: float | None = 10.0, model: type | None = None) -> Any:
        """Send a request, return the reply (as ``model`` when given). Raises
        ``RequestTimeout`` after ``timeout`` seconds (None or ``math.inf``: no deadline;
        negative or nan: a ``UserError`` with its fix), ``RemoteError`` (the handler failed; names a
        body's bad field) or ``PeerUnavailable``."""
        _check_topic(topic, "request")
        reply = await self.running.request(peer, topic, to_builtins(body), timeout=timeout)
        if model is None:
            return reply
        try:
            return contract_of(model).load(topic, reply)
        except BodyInvalid as exc:
            raise BodyInvalid(topic, exc.model, exc.detail, reply=True) from None

    async def publish(self, topic: str, body: Any) -> int:
        """Send to every connected peer that handles ``topic``; returns how many."""
        _check_topic(topic, "publish")
        return await self.running.publish(topic, to_builtins(body))

    async def disconnect(self, peer: str, *, reason: str = "closed by the program") -> bool:
        """Close the connections to ``peer`` (a peer id) after a goodbye giving
        ``reason``; False when none was open. It returns once what crossed the goodbye
        is answered (see :meth:`p2phost_sdk.Messenger.disconnect`)."""
        return await self.running.disconnect(peer, reason=reason)


def open_node(project: str | os.PathLike[str] | None = None, *,
              manifest: Mapping[str, Any] | None = None,
              state_dir: str | os.PathLike[str] | None = None,
              apps: Sequence[App] = (), control: bool = True,
              identity: Identity | None = None, name: str | None = None,
              keep_state: bool = True, codecs: Sequence[str] = (),
              fallback_apps: Sequence[App] = ()) -> AsyncNode:
    """The node of a project directory (``open_node(".")``), or of a manifest mapping
    kept in ``state_dir`` (``open_node(manifest={...}, state_dir=DIR)``); not open yet.

    Use it as ``async with open_node(...) as node:``; register handlers before that
    (``node = open_node(...)``, ``@node.handler(...)``). ``apps`` are app objects run
    beside the manifest's app plugins. ``control=False`` serves no control socket.
    Raises the errors ``p2phost run`` raises for the project (a missing plugin names
    the command that installs it) when the node opens.

    For a process that runs beside the project's own node (a Dask worker):
    ``identity`` (a :class:`p2phost_sdk.Identity`) is the node's in place of the project's
    key; ``name`` its name in place of ``[node] name``; ``keep_state=False`` writes no
    state into the project's ``.p2phost/`` (delivery database and replay guard live in
    memory) and serves no ``[metrics]`` port; ``codecs`` are content types offered first,
    in that order (:class:`p2phost.CodecMissing` when no plugin provides one);
    ``fallback_apps`` run only where no app plugin of the manifest handles their topics
    (a manifest's one keeps its ``[config.NAME]``; ``node.app(name)`` finds either).
    """
    overrides = Overrides(identity=identity, name=name, keep_state=keep_state,
                          codecs=tuple(codecs), fallback_apps=tuple(fallback_apps))
    return AsyncNode(project_of(project, manifest, state_dir), apps=apps, control=control,
                     from_mapping=manifest is not None, overrides=overrides)


def _check_topic(topic: str, call: str) -> None:
    """Refuse an empty topic here, as ``p2phost send`` does: no app handles "" (a
    MESSAGE or REQUEST frame always names one, docs/wire.md), so the peer could only
    answer with a RemoteError that carries no fix."""
    if not topic.strip():
        raise LibraryError(f"the topic of {call}() is empty: a message goes to the app that "
                           "handles its topic", fix=f"name the topic, e.g. node.{call}(" +
                           ("" if call == "publish" else "peer, ") + "\"echo\", {}) "
                           "(node.topics lists this node's; p2phost describe ADDR a peer's)")
