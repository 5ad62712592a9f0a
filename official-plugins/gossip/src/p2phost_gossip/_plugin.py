"""Gossip inside a node: an app on the ``gossip`` topic, and the API other apps publish through.

The app owns the node's :class:`~._router.Router`; frames travel as at-most-once messages on
the ``gossip`` topic over the node's own connections (through its security plugin). Two
tasks, both owned by the app and awaited at stop: the heartbeat, and the sender draining a
bounded outbox (a full outbox drops and counts: gossip repairs what a hop loses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from p2phost_sdk import (
    App,
    ConfigError,
    Message,
    Messenger,
    PeerInfo,
    PeerUnavailable,
    TraceContext,
    handler,
)

from ._messages import GossipMessage, Signer
from ._router import Router
from ._settings import GossipSettings

#: The app topic gossip frames travel on (docs/wire.md section 6).
TOPIC = "gossip"
log = logging.getLogger("p2phost.plugin.gossip")

#: A subscriber: called once per message delivered to this node; must not block.
Subscriber = Callable[[GossipMessage], None]

_running: dict[str, GossipApp] = {}


def gossip_of(peer_id: str) -> GossipApp:
    """The gossip app running in the node ``peer_id`` (an app's ``self.node.peer_id``)."""
    app = _running.get(peer_id)
    if app is None:
        raise PeerUnavailable(
            "gossip is not running in this node; fix: p2phost plugin install gossip (it adds "
            "gossip to [plugins] in p2phost.toml), and publish from the app's start() or later")
    return app


def settings_of(name: str, config: Mapping[str, Any]) -> GossipSettings:
    """Gossip's settings from ``[config.gossip]``; ConfigError naming a bad one."""
    fields = {"d": "d", "d-low": "d_low", "d-high": "d_high", "heartbeat": "heartbeat",
              "graft-timeout": "graft_timeout", "history": "history",
              "seen-size": "seen_size", "fanout-ttl": "fanout_ttl", "max-data": "max_data"}
    values: dict[str, Any] = {}
    for key, attr in fields.items():
        if key in config:
            kind = float if isinstance(getattr(GossipSettings, attr), float) else int
            try:
                values[attr] = kind(config[key])
            except (TypeError, ValueError):
                raise ConfigError(name, key, f"a {kind.__name__}", config[key]) from None
    required = config.get("require-signatures", True)
    if not isinstance(required, bool):
        raise ConfigError(name, "require-signatures", "true or false", required)
    settings = GossipSettings(**values, require_signatures=required)
    for field, expected in settings.check():
        raise ConfigError(name, field, expected, config.get(field, getattr(
            settings, field.replace("-", "_"), None)))
    for topic in config.get("topics", []):
        if not isinstance(topic, str) or not topic:
            raise ConfigError(name, "topics", "topic names (non-empty strings)", topic)
    return settings


class _Outbox:
    """The router's Wire: a bounded queue a sender task drains into ``node.send``.

    Each frame keeps the trace context current where it was queued (the handler of the
    message it forwards, or the publish), and the sender continues it: its send is then
    a child of that handler's span, not a trace of its own (docs/operations.md)."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], TraceContext | None]] = \
            asyncio.Queue(size)
        self.dropped = 0
        self.failed = 0
        #: The node's ``trace_context`` once the app started (a node that does not trace
        #: returns None: one call per frame).
        self.trace: Callable[..., TraceContext | None] = _untraced

    def send(self, peer_id: str, frame: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((peer_id, frame, self.trace()))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self, node: Messenger, timeout: float) -> None:
        while True:
            peer_id, frame, trace = await self.queue.get()
            try:
                async with asyncio.timeout(timeout):
                    if trace is None:
                        await node.send(peer_id, TOPIC, frame)
                    else:
                        with trace.carry():
                            await node.send(peer_id, TOPIC, frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a closed connection: repair covers the lost frame
                self.failed += 1
                log.debug("gossip frame to %s lost: %s", peer_id, exc)


def _untraced(root: str = "") -> TraceContext | None:
    """`Messenger.trace_context` before the app started, or on a host without it."""
    return None


class GossipApp(App):
    """Gossip pub/sub: relays the ``gossip`` topic, and publishes for the node's apps."""

    name = "gossip"

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 plugin: str = "gossip", peer_id: str | None = None,
                 sign: Signer | None = None, outbox: int = 4096) -> None:
        config = config or {}
        self.settings = settings_of(plugin, config)
        self.configured = tuple(config.get("topics", []))
        self._outbox = _Outbox(outbox)
        self._subscribers: defaultdict[str, list[Subscriber]] = defaultdict(list)
        self._router: Router | None = None
        self._sign = sign
        self._tasks: list[asyncio.Task[None]] = []
        self._trace: Callable[..., TraceContext | None] = _untraced
        if peer_id is not None:
            # Known from the plugin context: other apps of the node may subscribe and
            # publish from their own start(), whichever app the host starts first.
            self._make_router(peer_id)

    def _make_router(self, peer_id: str) -> None:
        if self._sign is None and self.settings.require_signatures:
            log.warning("gossip has no key to sign with (an older host?): its messages are "
                        "unsigned, and peers requiring signatures refuse them")
        self._router = Router(peer_id, self._outbox, self.settings, on_message=self._deliver,
                              sign=self._sign)
        _running[peer_id] = self

    @property
    def router(self) -> Router:
        """The node's router (once the app started)."""
        if self._router is None:
            raise PeerUnavailable("gossip has not started; fix: publish from start() or later")
        return self._router

    # -- the API for apps ----------------------------------------------------------------

    def publish(self, topic: str, data: Any) -> str:
        """Send ``data`` (anything the codec carries) to every subscriber of ``topic``.

        Returns the message id at once; the frames leave through the outbox. Traced, the
        publish continues the trace current here (a handler's), else begins one with a
        ``publish TOPIC`` span: every hop's spans of the message are in that trace.
        """
        trace = self._trace(f"publish {topic}")
        if trace is None:
            return self.router.publish(topic, data)
        with trace.carry():  # the frames queued now take it (_Outbox.send)
            return self.router.publish(topic, data)

    def subscribe(self, topic: str, subscriber: Subscriber | None = None) -> None:
        """Receive and relay ``topic``; ``subscriber`` is called with each message."""
        if subscriber is not None:
            self._subscribers[topic].append(subscriber)
        self.router.subscribe(topic)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (its subscribers are dropped)."""
        self._subscribers.pop(topic, None)
        self.router.unsubscribe(topic)

    def counters(self) -> dict[str, int]:
        """The router's counters, and frames the outbox dropped or could not send."""
        found = {} if self._router is None else self._router.stats()
        found["outbox dropped"] = self._outbox.dropped
        found["send failed"] = self._outbox.failed
        return found

    # -- the app -------------------------------------------------------------------------

    async def start(self, node: Messenger) -> None:
        """Make the router, greet connected peers, subscribe ``topics``, start the tasks."""
        self.node = node
        # A host older than Messenger.trace_context: no traces carried.
        self._trace = self._outbox.trace = getattr(node, "trace_context", _untraced)
        if self._router is None:
            self._make_router(node.peer_id)
        for peer in node.peers():
            await self.on_peer_connected(peer)
        for topic in self.configured:
            self.subscribe(topic)
        timeout = max(5.0, self.settings.heartbeat * 5)
        self._tasks = [
            asyncio.create_task(self._outbox.run(node, timeout), name="gossip-sender"),
            asyncio.create_task(self._beat(), name="gossip-heartbeat"),
        ]

    async def stop(self) -> None:
        """Cancel and await the heartbeat and the sender."""
        if self._router is not None and _running.get(self._router.peer_id) is self:
            del _running[self._router.peer_id]
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        """A peer that handles ``gossip`` may join meshes."""
        if self._router is not None and (TOPIC in peer.topics or not peer.topics):
            self._router.peer_joined(peer.peer_id)

    async def on_peer_lost(self, peer: PeerInfo, reason: str) -> None:
        """The peer leaves every mesh."""
        if self._router is not None:
            self._router.peer_left(peer.peer_id)

    @handler(TOPIC)
    async def frame(self, message: Message) -> None:
        """One gossip frame (msg, ihave, iwant, graft, prune, lazy, ...): docs/wire.md."""
        self.router.handle(message.sender, message.body)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                self.router.heartbeat()
            except Exception:  # a bug must not end gossip: log and beat again
                log.exception("gossip heartbeat failed")

    def _deliver(self, message: GossipMessage) -> None:
        subscribers = self._subscribers.get(message.topic, [])
        if not subscribers:
            log.info("gossip %s from %s: %r", message.topic, message.origin[:12],
                     message.data)
        for subscriber in subscribers:
            try:
                subscriber(message)
            except Exception:
                log.exception("a subscriber of gossip topic %r failed", message.topic)
