"""The node: listeners, dialling, channels to peers, and the messaging API apps use."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2phost_sdk import (
    App,
    Codec,
    CodecError,
    Connection,
    ConnectionClosed,
    Discovery,
    FrameTooLarge,
    HandshakeError,
    Identity,
    Message,
    MessageKind,
    P2PHostError,
    PeerInfo,
    PeerRecord,
    PeerUnavailable,
    RemoteError,
    RequestTimeout,
    Security,
    Transport,
    TransportError,
)

from ._backoff import Backoff
from ._channel import Channel
from ._envelope import MAX_FIELD, Envelope, Kind, encode
from ._errors import ListenError, NodeConfigError, WireError
from ._handshake import Hello, handshake
from ._mailbox import Mailbox
from ._peers import PeerTable
from ._tasks import TaskSet

log = logging.getLogger("p2phost.node")

INSECURE_WARNING = "no security plugin: connections are NOT authenticated or encrypted"
_LISTEN_FIX = ("pick another address in [node] listen of p2phost.toml (port 0 picks a free "
               "port), or stop the process that uses it")

# (handler or lifecycle call, message or None, message id, deadline ms, channel)
_Item = tuple[Callable[..., Awaitable[Any]], Message | None, int, int, Channel | None]


@dataclass(frozen=True)
class NodeOptions:
    """How a node runs. ``listen``, ``connect``, ``max_frame_size`` and ``peer_limit``
    come from ``[node]`` in p2phost.toml; the rest are tuning with safe defaults."""

    name: str = "node"
    listen: Sequence[str] = ()
    #: Addresses dialled at start and kept connected (reconnect with backoff).
    connect: Sequence[str] = ()
    max_frame_size: int = 16 * 1024 * 1024
    peer_limit: int = 64
    dial_timeout: float = 5.0
    handshake_timeout: float = 5.0
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 15.0
    reconnect: Backoff = field(default_factory=Backoff)
    #: How long shutdown waits for peers' goodbyes, and then for mailboxes to drain.
    drain_timeout: float = 10.0
    #: Bytes queued per connection before senders wait (backpressure).
    outbox_limit: int = 1024 * 1024


@dataclass(frozen=True)
class _Route:
    handler: Callable[[Message], Awaitable[Any]]
    mailbox: Mailbox[_Item]


class Node:
    """A running p2phost node; apps see it as their :class:`p2phost_sdk.Messenger`."""

    def __init__(
        self,
        identity: Identity,
        *,
        transports: Mapping[str, Transport],
        codecs: Mapping[str, Codec],
        discovery: Sequence[Discovery] = (),
        security: Sequence[Security] = (),
        apps: Sequence[App] = (),
        options: NodeOptions = NodeOptions(),
        hooks: Any = None,
    ) -> None:
        if not codecs:
            raise NodeConfigError("no codec plugin is loaded: a node needs one to encode "
                                  "messages", fix="p2phost plugin install json-codec")
        self.identity = identity
        self.options = options
        self._transports = dict(transports)
        self._codecs = dict(codecs)
        self._discovery = list(discovery)
        self._security = security[0] if security else None
        if len(security) > 1:
            log.warning("several security plugins are loaded; using %r",
                        type(self._security).__name__)
        self._apps = list(apps)
        self._hooks = hooks
        self._app_mailboxes: list[tuple[App, Mailbox[_Item]]] = []
        self._routes = self._route(self._apps)
        self._mailboxes = [mailbox for _, mailbox in self._app_mailboxes]
        self._table = PeerTable(identity.peer_id)
        self._pending: dict[int, tuple[str, str, asyncio.Future[Any]]] = {}
        # Random start: ids stay unique across restarts, for receivers that dedupe.
        self._ids = itertools.count(secrets.randbits(62) + 1)
        self._session = secrets.token_hex(8)
        self._tasks = TaskSet()
        self._targets: dict[str, asyncio.Task[None]] = {}
        self._dial_locks: dict[str, asyncio.Lock] = {}
        self._address_peers: dict[str, str] = {}
        self._waiting: dict[str, PeerRecord] = {}
        self._expected: dict[str, str] = {}
        self._topic_bytes: dict[str, bytes] = {}
        self._warned_topics: set[tuple[str, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Any] = []
        self._addresses: list[str] = []
        self._started = False
        self._closing = False

    def _route(self, apps: Iterable[App]) -> dict[str, _Route]:
        routes: dict[str, _Route] = {}
        owners: dict[str, str] = {}
        for app in apps:
            name = type(app).name or type(app).__name__
            mailbox: Mailbox[_Item] = Mailbox(name, app.mailbox_size, self._process)
            self._app_mailboxes.append((app, mailbox))
            for topic, handler in app.handlers().items():
                if topic in routes:
                    raise NodeConfigError(
                        f"topic {topic!r} is handled by two apps: {owners[topic]!r} and "
                        f"{name!r}", fix="remove one of the two app plugins from p2phost.toml")
                routes[topic] = _Route(handler, mailbox)
                owners[topic] = name
        return routes

    # -- what apps and discovery see -------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        return self.identity.peer_id

    @property
    def addresses(self) -> list[str]:
        """The addresses this node really listens on (port 0 resolved)."""
        return list(self._addresses)

    @property
    def topics(self) -> list[str]:
        """The topics this node's apps handle."""
        return sorted(self._routes)

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        infos = []
        for peer in self._table.peers.values():
            channel = peer.any_open()
            if channel is not None:
                infos.append(channel.info)
        return infos

    def peer_found(self, record: PeerRecord) -> None:
        """Discovery found a peer: keep a connection to it (while [node] peer-limit allows)."""
        if record.peer_id == self.peer_id:
            return
        if not self._room_for(record):
            self._waiting[record.peer_id or record.addresses[0]] = record
            return
        for address in record.addresses:
            if address not in self._addresses:
                if record.peer_id:  # the handshake must prove the id discovery announced
                    # First come stays: a forged record must not re-aim a known address.
                    self._expected.setdefault(address, record.peer_id)
                self._keep_connected(address)

    def peer_lost(self, record: PeerRecord) -> None:
        """Discovery lost a peer: stop redialling it (an open connection stays)."""
        self._waiting.pop(record.peer_id or record.addresses[0], None)
        for address in record.addresses:
            if self._expected.get(address) == record.peer_id:
                del self._expected[address]
            task = self._targets.pop(address, None)
            if task is not None:
                task.cancel()

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start apps, listen, start discovery, dial ``options.connect``."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        try:
            for app in self._apps:
                await app.start(self)
            for address in self.options.listen:
                transport = self._transport_for(address)
                try:
                    listener = await transport.listen(address, self._accept)
                except TransportError as exc:
                    raise ListenError(str(exc), fix=_LISTEN_FIX) from exc
                self._listeners.append(listener)
                self._addresses.extend(listener.addresses)
            if self._security is None:
                log.warning(INSECURE_WARNING)
            self._tasks.spawn(self._keepalive(), "keepalive")
            for discovery in self._discovery:
                await self._start_discovery(discovery)
            for address in self.options.connect:
                self._keep_connected(address)
        except BaseException:
            await self.close()
            raise
        self._notify("p2phost_node_started", peer_id=self.peer_id, addresses=self.addresses)

    # -- discovery guards (issue 8): a failing plugin, and [node] peer-limit -----------

    async def _start_discovery(self, discovery: Discovery) -> None:
        # One discovery plugin failing must stop neither the node nor the other plugins.
        try:
            async with asyncio.timeout(self.options.dial_timeout):
                await discovery.start(self)
        except Exception as exc:
            log.error("discovery %s failed to start, running without it: %s: %s",
                      type(discovery).__name__, type(exc).__name__, exc)

    def _room_for(self, record: PeerRecord) -> bool:
        if record.peer_id in self._table.peers:
            return True
        busy = set(self._table.peers) | {self._address_peers.get(a, a) for a in self._targets}
        return len(busy) < self.options.peer_limit

    def _dial_waiting(self) -> None:
        # A peer left: dial peers that discovery found while the node was full.
        while self._waiting and not self._closing:
            key = next(iter(self._waiting))
            record = self._waiting.pop(key)
            if not self._room_for(record):
                self._waiting[key] = record
                return
            self.peer_found(record)

    async def close(self) -> None:
        """Graceful shutdown: stop dialling and listening, say goodbye to every peer,
        drain every mailbox (replies still go out), then close everything."""
        if self._closing:
            return
        self._closing = True
        self._notify("p2phost_node_stopping", peer_id=self.peer_id)
        timeout = self.options.drain_timeout
        for task in self._targets.values():
            task.cancel()
        for discovery in self._discovery:
            await self._quietly(discovery.stop(), "stopping discovery")
        for listener in self._listeners:
            await self._quietly(listener.close(), "closing a listener")
        channels = [c for p in self._table.peers.values() for c in p.channels]
        for channel in channels:
            channel.goodbye("the node is shutting down")
        waits = [c.goodbye_received.wait() for c in channels if not c.ended]
        if waits:
            await self._quietly(asyncio.wait_for(asyncio.gather(*waits), timeout), "")
        for mailbox in self._mailboxes:
            left = await mailbox.close(timeout)
            if left:
                log.warning("app %s: %d messages were not handled within the %gs drain "
                            "timeout", mailbox.name, left, timeout)
        for channel in channels:
            await channel.flush(1.0)
            await channel.close("the node shut down")
        for app in self._apps:
            await self._quietly(app.stop(), f"stopping app {type(app).__name__}")
        await self._tasks.close()
        for transport in set(self._transports.values()):
            await self._quietly(transport.close(), "closing a transport")
        self._fail_pending(None, "the node shut down")

    async def _quietly(self, work: Awaitable[Any], what: str) -> None:
        try:
            async with asyncio.timeout(self.options.drain_timeout):
                await work
        except Exception as exc:
            if what:
                log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        if self._hooks is None:
            return
        try:
            getattr(self._hooks, hook)(**kwargs)
        except Exception:
            log.exception("a plugin's %s hook failed", hook)

    # -- connections -----------------------------------------------------------------

    def _transport_for(self, address: str) -> Transport:
        scheme = address.split("://", 1)[0] if "://" in address else ""
        transport = self._transports.get(scheme)
        if transport is None:
            have = ", ".join(f"{s}://" for s in sorted(self._transports)) or "none"
            raise NodeConfigError(
                f"no transport plugin serves {address!r} (loaded transports: {have})",
                fix=f"install one for {scheme or 'this'}://, e.g. p2phost plugin install "
                    "tcp-transport")
        return transport

    async def _accept(self, connection: Connection) -> None:
        if self._closing:
            await connection.close()
        elif len(self._table) >= self.options.peer_limit:
            self._tasks.spawn(self._refuse(connection, "peer limit reached"), "refuse")
        else:
            self._tasks.spawn(self._accept_one(connection), "handshake")

    async def _refuse(self, connection: Connection, reason: str) -> None:
        log.warning("refused a connection from %s: %s", connection.remote_address, reason)
        try:
            async with asyncio.timeout(1.0):
                await connection.send(encode(Kind.GOODBYE, 0, body=reason.encode()))
        except (TimeoutError, P2PHostError):
            pass
        await connection.close()

    async def _accept_one(self, connection: Connection) -> None:
        try:
            await self._open(connection, initiator=False, address=connection.remote_address)
        except HandshakeError as exc:
            log.warning("closed connection from %s: %s", connection.remote_address, exc)

    async def _open(self, connection: Connection, *, initiator: bool, address: str,
                    expected_peer_id: str | None = None) -> Channel:
        nonce = secrets.token_hex(8)
        hello = Hello(peer_id=self.peer_id, codecs=tuple(self._codecs), topics=tuple(self.topics),
                      listen=tuple(self._addresses), session=self._session, nonce=nonce,
                      name=self.options.name, max_frame_size=self.options.max_frame_size)
        done = await handshake(
            connection, hello=hello, codecs=self._codecs, identity=self.identity,
            security=self._security, initiator=initiator, expected_peer_id=expected_peer_id,
            timeout=self.options.handshake_timeout,
        )
        channel = Channel(done, address=address, initiator=initiator, local_nonce=nonce,
                          on_message=self._on_message, on_reply=self._on_reply,
                          outbox_limit=self.options.outbox_limit)
        if self._closing:
            await channel.close("the node is shutting down")
            raise HandshakeError("the node is shutting down")
        peer, new, retire = self._table.add(channel)
        self._tasks.spawn(self._serve(channel), f"channel {channel.peer_id[:12]}")
        for loser, reason in retire:
            self._tasks.spawn(self._retire(loser, reason), "retire")
        if new:
            log.info("connected to %s (%s, codec %s)", channel.peer_id, address,
                     channel.codec.content_type)
            self._lifecycle(peer.peer_id, "on_peer_connected", channel.info)
            self._notify("p2phost_peer_connected", peer=channel.info)
        return channel

    async def _serve(self, channel: Channel) -> None:
        reason = await channel.run()
        log.debug("connection to %s (%s) ended: %s", channel.peer_id, channel.address, reason)
        peer = self._table.remove(channel)
        if peer is None:
            return
        log.info("disconnected from %s (%s): %s", peer.peer_id, channel.address, reason)
        self._fail_pending(peer.peer_id, f"the connection was lost: {reason}")
        self._lifecycle(peer.peer_id, "on_peer_lost", channel.info, reason)
        for mailbox in self._mailboxes:
            mailbox.peer_gone(peer.peer_id)
        self._notify("p2phost_peer_lost", peer=channel.info, reason=reason)
        self._dial_waiting()

    async def _retire(self, channel: Channel, reason: str) -> None:
        log.debug("retiring connection to %s (%s): %s", channel.peer_id, channel.address, reason)
        channel.goodbye(reason)
        if reason.startswith("duplicate"):
            # Both ends retire the same connection; each closes once the other said so.
            try:
                async with asyncio.timeout(self.options.handshake_timeout):
                    await channel.goodbye_received.wait()
            except TimeoutError:
                pass
        await channel.flush(1.0)
        await channel.close(reason)

    def _lifecycle(self, peer_id: str, method: str, *args: Any) -> None:
        # Through each app's mailbox, so the app sees it in order with the peer's messages.
        for app, mailbox in self._app_mailboxes:
            call = functools.partial(getattr(app, method), *args)
            mailbox.put_nowait(peer_id, (call, None, 0, 0, None))

    def _keep_connected(self, address: str) -> None:
        if address in self._targets or self._closing:
            return
        self._targets[address] = self._tasks.spawn(self._supervise(address), f"dial {address}")

    async def _supervise(self, address: str) -> None:
        """Stay connected to ``address``: redial with backoff whenever the peer is gone."""
        backoff, failures = self.options.reconnect, 0
        while True:
            peer_id = self._address_peers.get(address)
            peer = self._table.get(peer_id) if peer_id else None
            if peer is None:
                try:
                    peer_id = await self.connect(address,
                                                 expected_peer_id=self._expected.get(address))
                except (PeerUnavailable, NodeConfigError) as exc:
                    if failures == 0 or failures % 10 == 9:
                        log.warning("cannot connect to %s (will retry): %s", address, exc)
                    await asyncio.sleep(backoff.delay(failures))
                    failures += 1
                    continue
                if failures:
                    log.info("reconnected to %s after %d failed attempts", address, failures)
                failures = 0
                peer = self._table.get(peer_id)
            if peer is not None:
                await peer.gone.wait()
            await asyncio.sleep(backoff.delay(0))

    async def connect(self, address: str, *, expected_peer_id: str | None = None) -> str:
        """Dial ``address`` (or reuse the connection to it); returns the peer id.

        With ``expected_peer_id`` (what discovery announced), a peer that cannot prove
        that id fails the handshake.
        """
        lock = self._dial_locks.setdefault(address, asyncio.Lock())
        async with lock:
            known = self._address_peers.get(address)
            if known is not None and self._usable(known) is not None:
                return known
            if self._closing:
                raise PeerUnavailable("the node is shutting down")
            transport = self._transport_for(address)
            try:
                connection = await transport.dial(address, timeout=self.options.dial_timeout)
            except TransportError as exc:
                raise PeerUnavailable(str(exc)) from exc
            try:
                channel = await self._open(connection, initiator=True, address=address,
                                           expected_peer_id=expected_peer_id)
            except HandshakeError as exc:
                raise PeerUnavailable(f"{address}: handshake failed: {exc}") from exc
            self._address_peers[address] = channel.peer_id
            return channel.peer_id

    async def _keepalive(self) -> None:
        interval, timeout = self.options.keepalive_interval, self.options.keepalive_timeout
        while True:
            await asyncio.sleep(min(interval, timeout) / 2)
            now = time.monotonic()
            for peer in list(self._table.peers.values()):
                for channel in list(peer.channels):
                    idle = now - channel.last_seen
                    if channel.stalled or channel.ended:
                        continue
                    if idle >= timeout:
                        log.warning("peer %s (%s) sent nothing for %.0fs: closing the "
                                    "connection (keepalive timeout)", peer.peer_id,
                                    channel.address, idle)
                        self._tasks.spawn(channel.close(f"keepalive timeout ({idle:.0f}s "
                                                        "without traffic)"), "close")
                    elif idle >= interval:
                        channel.ping()

    # -- sending ---------------------------------------------------------------------

    def _usable(self, peer_id: str) -> Channel | None:
        peer = self._table.peers.get(peer_id)
        return peer.best() if peer is not None else None

    async def _reach(self, peer: str) -> Channel:
        if "://" in peer:
            peer = await self.connect(peer)
            channel = self._usable(peer)
            if channel is not None:
                return channel
        if peer == self.peer_id:
            raise PeerUnavailable("a node cannot send to itself")
        raise PeerUnavailable(f"peer {peer} is not connected")

    def _frame(self, channel: Channel, kind: Kind, message_id: int, topic: str, body: Any,
               deadline: int = 0) -> bytes:
        topic_bytes = self._topic_bytes.get(topic)
        if topic_bytes is None:
            topic_bytes = topic.encode()
            if len(topic_bytes) > MAX_FIELD:
                raise WireError(f"topic {topic[:40]!r}... is longer than {MAX_FIELD} bytes")
            if len(self._topic_bytes) < 4096:
                self._topic_bytes[topic] = topic_bytes
        frame = encode(kind, message_id, topic_bytes, channel.codec.encode(body),
                       deadline=deadline)
        if len(frame) > self.options.max_frame_size:
            raise FrameTooLarge(
                f"a message on {topic!r} is {len(frame)} bytes, over the maximum frame size "
                f"of {self.options.max_frame_size} (max-frame-size in [node] of p2phost.toml)")
        return frame

    async def send(self, peer: str, topic: str, body: Any) -> None:
        """Deliver ``body`` on ``topic`` to ``peer`` (a peer id or an address), no reply."""
        channel = self._usable(peer) or await self._reach(peer)
        frame = self._frame(channel, Kind.MESSAGE, next(self._ids), topic, body)
        if not channel.try_post(frame):
            try:
                await channel.send(frame)
            except ConnectionClosed as exc:
                raise PeerUnavailable(f"peer {channel.peer_id}: {exc}") from exc

    async def request(self, peer: str, topic: str, body: Any, *, timeout: float = 10.0) -> Any:
        """Send a request and return the reply body (see :class:`p2phost_sdk.Messenger`)."""
        channel = self._usable(peer) or await self._reach(peer)
        message_id = next(self._ids)
        deadline = int((time.time() + timeout) * 1000)
        frame = self._frame(channel, Kind.REQUEST, message_id, topic, body, deadline)
        loop = self._loop or asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._pending[message_id] = (channel.peer_id, topic, reply)
        # A plain timer, cheaper than asyncio.timeout() on this hot path.
        timer = loop.call_later(timeout, _expire, reply, channel.peer_id, topic, timeout)
        try:
            if not channel.try_post(frame):
                await channel.send(frame)
            return await reply
        except ConnectionClosed as exc:
            raise PeerUnavailable(f"peer {channel.peer_id}: {exc}") from exc
        finally:
            timer.cancel()
            self._pending.pop(message_id, None)

    async def publish(self, topic: str, body: Any) -> int:
        """Send to every connected peer that handles ``topic``; returns how many."""
        message_id, sent = next(self._ids), 0
        frames: dict[str, bytes] = {}
        for peer in list(self._table.peers.values()):
            channel = peer.best()
            if channel is None or topic not in channel.topics:
                continue
            frame = frames.get(channel.codec.content_type)
            if frame is None:
                frame = frames[channel.codec.content_type] = self._frame(
                    channel, Kind.MESSAGE, message_id, topic, body)
            if not channel.try_post(frame):
                try:
                    await channel.send(frame)
                except ConnectionClosed:
                    continue
            sent += 1
        return sent

    def _fail_pending(self, peer_id: str | None, reason: str) -> None:
        for message_id, (peer, _, reply) in list(self._pending.items()):
            if peer_id is None or peer == peer_id:
                del self._pending[message_id]
                if not reply.done():
                    reply.set_exception(PeerUnavailable(f"peer {peer}: {reason}"))

    # -- receiving -------------------------------------------------------------------

    def _on_message(self, channel: Channel, envelope: Envelope) -> Awaitable[None] | None:
        peer = channel.peer_id
        if envelope.sender and envelope.sender != peer:
            raise WireError(f"envelope sender {envelope.sender} is not the connection's peer")
        if envelope.recipient and envelope.recipient != self.peer_id:
            raise WireError(f"envelope recipient {envelope.recipient} is not this node")
        route = self._routes.get(envelope.topic)
        if route is None:
            self._unrouted(channel, envelope)
            return None
        request = envelope.kind is Kind.REQUEST
        message = Message(
            format(envelope.message_id, "016x"),
            MessageKind.REQUEST if request else MessageKind.MESSAGE,
            peer, envelope.topic, channel.codec.decode(envelope.body), None,
            channel.codec.content_type,
        )
        item: _Item = (route.handler, message, envelope.message_id, envelope.deadline, channel)
        if route.mailbox.try_put(peer, item):
            return None
        return route.mailbox.put(peer, item)

    def _unrouted(self, channel: Channel, envelope: Envelope) -> None:
        text = f"no app on this node handles topic {envelope.topic!r}"
        if envelope.kind is Kind.REQUEST:
            channel.post(encode(Kind.ERROR, next(self._ids), body=text.encode(),
                                correlation_id=envelope.message_id))
        elif (channel.peer_id, envelope.topic) not in self._warned_topics:
            self._warned_topics.add((channel.peer_id, envelope.topic))
            log.warning("dropping messages from %s: %s", channel.peer_id, text)

    def _on_reply(self, channel: Channel, envelope: Envelope) -> None:
        if envelope.kind is Kind.ACK:
            return
        entry = self._pending.pop(envelope.correlation_id, None)
        if entry is None or entry[0] != channel.peer_id:
            log.debug("a reply from %s matches no waiting request (late?)", channel.peer_id)
            return
        peer, topic, reply = entry
        if reply.done():
            return
        if envelope.kind is Kind.ERROR:
            reply.set_exception(RemoteError(peer, topic, envelope.body.decode(errors="replace")))
            return
        try:
            reply.set_result(channel.codec.decode(envelope.body))
        except CodecError as exc:
            reply.set_exception(CodecError(f"the reply from {peer} is not valid: {exc}"))
            raise

    async def _process(self, peer: str, item: _Item) -> None:
        func, message, message_id, deadline, channel = item
        if message is None:
            try:
                await func()
            except Exception:
                log.exception("app lifecycle call %r failed", func)
            return
        if deadline and deadline < time.time() * 1000:
            log.debug("skipping an expired %r request from %s", message.topic, peer)
            return
        try:
            result = await func(message)
        except Exception as exc:
            log.warning("the %r handler failed on a message from %s: %s: %s",
                        message.topic, peer, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            if message.kind is MessageKind.REQUEST:
                await self._reply(peer, channel, message_id, Kind.ERROR,
                                  f"{type(exc).__name__}: {exc}")
            return
        if message.kind is MessageKind.REQUEST:
            await self._reply(peer, channel, message_id, Kind.REPLY, result)

    async def _reply(self, peer: str, channel: Channel | None, message_id: int, kind: Kind,
                     value: Any) -> None:
        if channel is None or channel.ended:
            known = self._table.get(peer)
            channel = known.any_open() if known is not None else None
            if channel is None:
                log.debug("dropping a reply to %s: the peer is gone", peer)
                return
        try:
            body = channel.codec.encode(value) if kind is Kind.REPLY else str(value).encode()
        except CodecError as exc:
            kind, body = Kind.ERROR, f"the handler's result cannot be encoded: {exc}".encode()
        frame = encode(kind, next(self._ids), body=body, correlation_id=message_id)
        if len(frame) > self.options.max_frame_size:
            frame = encode(Kind.ERROR, next(self._ids), correlation_id=message_id,
                           body=f"the reply is {len(frame)} bytes, over the maximum frame "
                                f"size of {self.options.max_frame_size}".encode())
        if channel.try_post(frame):
            return
        try:
            await channel.send(frame)
        except ConnectionClosed:
            log.debug("dropping a reply to %s: the connection closed", peer)



def _expire(reply: asyncio.Future[Any], peer: str, topic: str, timeout: float) -> None:
    if not reply.done():
        reply.set_exception(RequestTimeout(
            f"no reply from {peer} to a {topic!r} request within {timeout:g}s"))
