"""The node: listeners, dialling, channels to peers, and the messaging API apps use."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2phost_sdk import (
    App,
    Codec,
    Connection,
    Discovery,
    HandshakeError,
    Identity,
    PeerInfo,
    PeerRecord,
    PeerUnavailable,
    PresenceSigner,
    RequestTimeout,
    Security,
    SignedPresence,
    Transport,
    TransportError,
)

from .._delivery_settings import DeliverySettings
from ._backoff import Backoff
from ._channel import Channel
from ._delivery import Reliable
from ._discovering import DiscoveryRunner
from ._dispatch import Dispatcher
from ._envelope import Kind
from ._errors import ListenError, NodeConfigError
from ._handshake import Admit, Hello, handshake, refuse
from ._letters import Letters, key_id
from ._peers import PeerTable
from ._sealed import Sealer
from ._store import DATABASE_NAME
from ._targets import DialTargets
from ._tasks import TaskSet

log = logging.getLogger("p2phost.node")

INSECURE_WARNING = "no security plugin: connections are NOT authenticated or encrypted"
_LISTEN_FIX = ("pick another address in [node] listen of p2phost.toml (port 0 picks a free "
               "port), or stop the process that uses it")
# A shared medium (broker, database) is not ours to pick a port on: its URL, or the
# service behind it, is what is wrong.
_MEDIUM_FIX = ("check the URL in [node] listen of p2phost.toml, and that the broker or "
               "database runs there and accepts those credentials")

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
    #: A short-lived client (``p2phost send``/``ping``) with its project's identity: its
    #: hello says so, and the node it talks to keeps its channel apart from the peers.
    client: bool = False
    #: Seconds a sealed frame (inbox media) stays acceptable: ``[trust] replay-window``.
    replay_window: float = 600.0
    #: Where the delivery database lives (``.p2phost``); None keeps it in memory.
    state_dir: Path | None = None
    #: ``[delivery]`` of p2phost.toml (docs/delivery.md).
    delivery: DeliverySettings = field(default_factory=DeliverySettings)


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
        admit: Admit | None = None,
    ) -> None:
        if not codecs:
            raise NodeConfigError("no codec plugin is loaded: a node needs one to encode "
                                  "messages", fix="p2phost plugin install json-codec")
        self.identity = identity
        self.options = options
        self._transports = dict(transports)
        self._codecs = dict(codecs)
        self._discovery = DiscoveryRunner(discovery, timeout=options.dial_timeout)
        self._signer = PresenceSigner(identity)
        self._security = security[0] if security else None
        if len(security) > 1:
            log.warning("several security plugins are loaded; using %r",
                        type(self._security).__name__)
        # Secure nodes seal every frame on inbox media (no stream to secure there).
        self._sealer = None if self._security is None else Sealer(
            identity, replay_window=options.replay_window)
        self._admit = admit
        self._apps = list(apps)
        self._hooks = hooks
        self._dispatch = Dispatcher(self._apps, local_peer_id=identity.peer_id,
                                    max_frame_size=options.max_frame_size,
                                    reply_channel=self._reply_channel)
        # Acknowledged delivery (docs/delivery.md): sends on its topics divert to it.
        self._reliable = Reliable(
            self, self._dispatch, apps=self._apps, codecs=self._codecs,
            settings=options.delivery,
            path=options.state_dir / DATABASE_NAME if options.state_dir else None)
        self._acked_topics = self._reliable.topics
        # Stored messages on inbox media (docs/transports.md, "Peers that are not running").
        self._letters = Letters(identity=identity, dispatch=self._dispatch,
                                reliable=self._reliable, codecs=self._codecs,
                                transports=self._transports, admit=admit,
                                client=options.client, frame_limit=options.max_frame_size)
        self._table = PeerTable(identity.peer_id)
        self._session = secrets.token_hex(8)
        self._tasks = TaskSet()
        self._dial_locks: dict[str, asyncio.Lock] = {}
        self._address_peers: dict[str, str] = {}
        self._waiting: dict[str, PeerRecord] = {}
        # Dial targets live while a discovery record lists them (_targets.py).
        self._dial = DialTargets(connect=self._dial_one, gone=self._gone,
                                 spawn=self._tasks.spawn, backoff=options.reconnect,
                                 own_addresses=lambda: self._addresses)
        self._listeners: list[Any] = []
        self._addresses: list[str] = []
        self._started = False
        self._closing = False

    # -- what apps and discovery see -------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        return self.identity.peer_id

    @property
    def delivery(self) -> Reliable:
        """Acknowledged delivery: its counters, dead letters and operator commands."""
        return self._reliable

    @property
    def addresses(self) -> list[str]:
        """The addresses this node really listens on (port 0 resolved)."""
        return list(self._addresses)

    @property
    def topics(self) -> list[str]:
        """The topics this node's apps handle."""
        return self._dispatch.topics

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        infos = []
        for peer in self._table.peers.values():
            channel = peer.any_open()
            if channel is not None:
                infos.append(channel.info)
        return infos

    def sign_presence(self, scope: str, addresses: Sequence[str], *, lifetime: float,
                      goodbye: bool = False) -> SignedPresence:
        """This node's presence record, signed (for discovery plugins to announce)."""
        return self._signer.sign(scope, addresses, lifetime=lifetime, goodbye=goodbye)

    def peer_found(self, record: PeerRecord) -> None:
        """Discovery found a peer: keep a connection to it (while [node] peer-limit allows)."""
        if record.peer_id == self.peer_id:
            return
        if not self._room_for(record):
            self._waiting[record.peer_id or record.addresses[0]] = record
            return
        # The handshake must prove the id discovery announced (the target expects it).
        self._dial.update(record)

    def peer_lost(self, record: PeerRecord) -> None:
        """Discovery lost a peer: stop redialling it (an open connection stays)."""
        self._waiting.pop(record.peer_id or record.addresses[0], None)
        self._dial.lost(record)

    def discovery_status(self) -> dict[str, Any]:
        """Each discovery plugin (up or down, why, its counters) and the dial counters."""
        return {"plugins": self._discovery.status(), "dialling": self._dial.snapshot()}

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
        try:
            self._reliable.start()
            self._letters.attach()
            for app in self._apps:
                await app.start(self)
            for address in self.options.listen:
                transport = self._transport_for(address)
                try:
                    listener = await transport.listen(
                        address, functools.partial(self._accept, transport))
                except TransportError as exc:
                    fix = _MEDIUM_FIX if transport.inbox_based else _LISTEN_FIX
                    raise ListenError(str(exc), fix=fix) from exc
                self._listeners.append(listener)
                self._addresses.extend(listener.addresses)
            if self._security is None:
                log.warning(INSECURE_WARNING)
                if self._admit is not None:
                    log.warning("the trust policy sees peer ids that no security plugin "
                                "proves: install one (p2phost plugin install noise-security)")
            self._tasks.spawn(self._keepalive(), "keepalive")
            await self._discovery.start(self)
            for address in self.options.connect:
                self._keep_connected(address)
        except BaseException:
            await self.close()
            raise
        self._notify("p2phost_node_started", peer_id=self.peer_id, addresses=self.addresses)

    # -- discovery guards (issue 8): [node] peer-limit ----------------------------------

    def _room_for(self, record: PeerRecord) -> bool:
        if record.peer_id in self._table.peers:
            return True
        busy = set(self._table.peers) | self._dial.busy()
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
        await self._reliable.drain(timeout)
        self._dial.close()
        await self._discovery.stop()
        for listener in self._listeners:
            await self._quietly(listener.close(), "closing a listener")
        channels = [c for p in self._table.peers.values() for c in p.channels]
        for channel in channels:
            channel.goodbye("the node is shutting down")
        if channels:  # after the peers' goodbyes, no new message can arrive
            await self._quietly(asyncio.wait_for(
                asyncio.gather(*(c.peer_done.wait() for c in channels)), timeout), "")
        await self._dispatch.drain(timeout)
        await self._reliable.close()
        for channel in channels:
            await channel.flush(1.0)
            await channel.close("the node shut down")
        for app in self._apps:
            await self._quietly(app.stop(), f"stopping app {type(app).__name__}")
        await self._tasks.close()
        await self._letters.close()
        for transport in set(self._transports.values()):
            await self._quietly(transport.close(), "closing a transport")
        self._dispatch.fail_pending(None, "the node shut down")

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

    async def _accept(self, transport: Transport, connection: Connection) -> None:
        if self._closing:
            await connection.close()
        elif len(self._table) >= self.options.peer_limit:
            self._tasks.spawn(self._refuse(connection, "peer limit reached"), "refuse")
        else:
            self._tasks.spawn(self._accept_one(transport, connection), "handshake")

    async def _refuse(self, connection: Connection, reason: str) -> None:
        log.warning("refused a connection from %s: %s", connection.remote_address, reason)
        await refuse(connection, reason)

    async def _accept_one(self, transport: Transport, connection: Connection) -> None:
        try:
            await self._open(connection, initiator=False, address=connection.remote_address,
                             inbox=transport.inbox_based)
        except HandshakeError as exc:
            log.warning("closed connection from %s: %s", connection.remote_address, exc)

    async def _open(self, connection: Connection, *, initiator: bool, address: str,
                    inbox: bool, expected_peer_id: str | None = None) -> Channel:
        """Handshake (securing stream connections), then serve the channel."""
        nonce = secrets.token_hex(8)
        hello = Hello(peer_id=self.peer_id, codecs=tuple(self._codecs), topics=tuple(self.topics),
                      listen=tuple(self._addresses), session=self._session, nonce=nonce,
                      name=self.options.name, max_frame_size=self.options.max_frame_size,
                      extra={**self._reliable.hello_extra(),
                             **({"client": True} if self.options.client else {})})
        done = await handshake(
            connection, hello=hello, codecs=self._codecs, identity=self.identity,
            # Inbox media carry no stream to secure: they get message-level security.
            security=self._sealer if inbox else self._security, initiator=initiator,
            expected_peer_id=expected_peer_id,
            timeout=self.options.handshake_timeout,
            admit=self._admit, client=self.options.client,
        )
        channel = Channel(done, address=address, initiator=initiator, local_nonce=nonce,
                          on_message=self._dispatch.on_message,
                          on_reply=self._dispatch.on_reply,
                          outbox_limit=self.options.outbox_limit,
                          max_frame_size=self.options.max_frame_size)
        if self._closing:
            await channel.close("the node is shutting down")
            raise HandshakeError("the node is shutting down")
        if not initiator and done.hello.extra.get("client") is True:
            # A client may share a peer's id (its project's): kept out of the peer table,
            # it neither replaces nor duplicates that peer's connection, and goes with
            # its last reply.
            self._tasks.spawn(channel.run(), f"client {channel.peer_id[:12]}")
            return channel
        peer, new, retire = self._table.add(channel)
        self._reliable.connected(channel)
        self._tasks.spawn(self._serve(channel), f"channel {channel.peer_id[:12]}")
        for loser, reason, mutual in retire:
            self._tasks.spawn(self._retire(loser, reason, mutual), "retire")
        if new:
            log.info("connected to %s (%s, codec %s)", channel.peer_id, address,
                     channel.codec.content_type)
            self._dispatch.lifecycle(peer.peer_id, "on_peer_connected", channel.info)
            self._notify("p2phost_peer_connected", peer=channel.info)
        return channel

    async def _serve(self, channel: Channel) -> None:
        reason = await channel.run()
        self._reliable.disconnected(channel)
        log.debug("connection to %s (%s) ended: %s", channel.peer_id, channel.address, reason)
        peer = self._table.remove(channel)
        if peer is None:
            return
        log.info("disconnected from %s (%s): %s", peer.peer_id, channel.address, reason)
        self._dispatch.lifecycle(peer.peer_id, "on_peer_lost", channel.info, reason)
        self._dispatch.peer_gone(peer.peer_id, reason)
        self._notify("p2phost_peer_lost", peer=channel.info, reason=reason)
        self._dial_waiting()

    async def _retire(self, channel: Channel, reason: str, mutual: bool) -> None:
        log.debug("retiring connection to %s (%s): %s", channel.peer_id, channel.address, reason)
        channel.goodbye(reason)
        if mutual:  # both ends retire it: each closes once the other said goodbye
            try:
                async with asyncio.timeout(self.options.handshake_timeout):
                    await channel.peer_done.wait()
            except TimeoutError:
                pass
        await channel.flush(1.0)
        await channel.close(reason)

    def _keep_connected(self, address: str) -> None:
        """Stay connected to ``address`` ([node] connect, static peers, the outbox)."""
        if not self._closing:
            self._dial.update(PeerRecord((address,), source="connect"))

    async def _dial_one(self, address: str, expected_peer_id: str | None) -> str:
        try:
            return await self.connect(address, expected_peer_id=expected_peer_id)
        except NodeConfigError as exc:
            raise PeerUnavailable(str(exc)) from exc

    def _gone(self, peer_id: str) -> asyncio.Event | None:
        peer = self._table.get(peer_id)
        return None if peer is None else peer.gone

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
                refusal = self._letters.refusal(address)
                raise PeerUnavailable(f"{exc}; {refusal}" if refusal else str(exc)) from exc
            try:
                channel = await self._open(connection, initiator=True, address=address,
                                           inbox=transport.inbox_based,
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

    # -- messaging (Messenger) -------------------------------------------------------

    def _usable(self, peer_id: str) -> Channel | None:
        peer = self._table.peers.get(peer_id)
        return peer.best() if peer is not None else None

    def _reply_channel(self, peer_id: str) -> Channel | None:
        peer = self._table.get(peer_id)
        return peer.any_open() if peer is not None else None

    async def _reach(self, peer: str) -> Channel:
        if "://" in peer:
            peer = await self.connect(peer)
            channel = self._usable(peer)
            if channel is not None:
                return channel
        if peer == self.peer_id:
            raise PeerUnavailable("a node cannot send to itself")
        raise PeerUnavailable(f"peer {peer} is not connected")

    def stores_letters(self, address: str) -> bool:
        """Whether a message to ``address`` is stored in the peer's inbox (an inbox
        address on a medium that holds messages, its peer not connected now) rather
        than sent on a connection."""
        if self._letters.refusal(address) != "":
            return False
        peer_id = address.rsplit("#", 1)[1] if "#" in address else ""
        return self._usable(self._address_peers.get(address, peer_id)) is None

    async def store(self, address: str, topic: str, body: Any, *,
                    key: str | None = None) -> str:
        """Store a message for the peer of ``address`` (``MEDIUM#PEERID``) in its inbox,
        whether it runs or not; returns the medium's URL once it has the message."""
        channel = self._letters.channel(address)
        message_id = key_id(key) if key is not None else self._dispatch.next_id()
        frame = self._dispatch.frame(channel, Kind.MESSAGE, message_id, topic, body)
        try:
            return await self._letters.post(channel, frame)
        except TransportError as exc:
            raise PeerUnavailable(str(exc)) from exc

    async def _stores(self, address: str) -> bool:
        """Whether a message to ``address`` is stored rather than sent on a connection:
        a running peer gets a session first when this node is a peer on that medium."""
        if "://" not in address or not self.stores_letters(address):
            return False
        if not self._letters.worth_dialling(address):
            return True
        try:
            await self.connect(address)
        except PeerUnavailable as exc:
            log.info("storing messages for %s (no connection: %s)", address, exc)
            self._letters.unreachable(address)
            return True
        return False

    async def _request_stored(self, address: str, topic: str, body: Any,
                              timeout: float) -> Any:
        self._letters.check_request(address)
        channel = self._letters.channel(address)
        try:
            return await self._dispatch.request(channel, topic, body, timeout)
        except TransportError as exc:
            raise PeerUnavailable(str(exc)) from exc
        except RequestTimeout as exc:
            raise RequestTimeout(
                f"{exc}: the request was stored in its inbox, and {channel.peer_id} did not "
                "answer in time (is it running? a request is answered only while the "
                "requester waits)") from None

    async def send(self, peer: str, topic: str, body: Any, *, key: str | None = None) -> None:
        """Deliver ``body`` on ``topic`` to ``peer`` (a peer id or an address), no reply
        (through the outbox on acknowledged topics: see :class:`p2phost_sdk.Messenger`;
        stored in the peer's inbox for an inbox address whose peer is not connected)."""
        if await self._stores(peer):
            await self.store(peer, topic, body, key=key)
            return
        if topic in self._acked_topics and await self._reliable.send(peer, topic, body, key):
            return
        await self._dispatch.send(self._usable(peer) or await self._reach(peer), topic, body)

    async def request(self, peer: str, topic: str, body: Any, *, timeout: float = 10.0) -> Any:
        """Send a request and return the reply body (see :class:`p2phost_sdk.Messenger`)."""
        if await self._stores(peer):
            return await self._request_stored(peer, topic, body, timeout)
        channel = self._usable(peer) or await self._reach(peer)
        return await self._dispatch.request(channel, topic, body, timeout)

    async def publish(self, topic: str, body: Any) -> int:
        """Send to every connected peer that handles ``topic``; returns how many."""
        channels = [p.best() for p in list(self._table.peers.values())]
        if topic in self._acked_topics:
            return await self._reliable.publish([c for c in channels if c is not None], topic,
                                                body)
        return await self._dispatch.publish([c for c in channels if c is not None], topic, body)
