"""The DHT inside a node: an app answering the ``dht`` topic, and a discovery plugin.

One :class:`DhtService` per node holds the :class:`~._dht.Dht`; its app half gets the
node's :class:`~p2phost_sdk.Messenger` (requests travel over the node's own connections,
through its security plugin) and its discovery half gets the node's
:class:`~p2phost_sdk.DiscoveryEvents` (to sign this node's records, and to report the
peers it was asked to find). The discovery half owns the one background task: join,
then look up, provide and refresh on their intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from p2phost_sdk import (
    App,
    ConfigError,
    Discovery,
    DiscoveryEvents,
    Message,
    Messenger,
    PeerRecord,
    PeerUnavailable,
    SignedPresence,
    handler,
    is_peer_id,
    is_wildcard,
)

from ._dht import Dht, DhtSettings
from ._keys import DIALLED
from ._records import MAX_LIFETIME
from ._routing import TableLimits

#: The app topic DHT requests travel on (docs/wire.md).
TOPIC = "dht"
log = logging.getLogger("p2phost.plugin.dht-discovery")


def settings_of(name: str, config: Mapping[str, Any]) -> DhtSettings:
    """The DHT's settings from ``[config.dht-discovery]``; ConfigError naming a bad one."""
    for field in ("k", "alpha", "prefix-per-bucket", "prefix-per-table"):
        if int(config.get(field, 1)) < 1:
            raise ConfigError(name, field, "a whole number of at least 1", config[field])
    if int(config.get("join-peers", 0)) < 0:
        raise ConfigError(name, "join-peers", "a whole number (0: alpha x k)", config["join-peers"])
    for field in ("request-timeout", "lookup-timeout", "refresh-interval", "lookup-interval",
                  "record-lifetime", "requests-per-second", "refresh-timeout"):
        if float(config.get(field, 1.0)) <= 0:
            raise ConfigError(name, field, "a positive number of seconds", config[field])
    if float(config.get("record-lifetime", 1.0)) > MAX_LIFETIME:
        raise ConfigError(name, "record-lifetime", f"at most {MAX_LIFETIME:g} seconds (other "
                          "nodes refuse records that live longer)", config["record-lifetime"])
    if float(config.get("idle-timeout", 1.0)) < 0:
        raise ConfigError(name, "idle-timeout", "a number of seconds (0: never close)",
                          config["idle-timeout"])
    for peer_id in config.get("find", []):
        if not is_peer_id(peer_id):
            raise ConfigError(name, "find", "peer ids (as `p2phost id` prints them)", peer_id)
    for address in config.get("bootstrap", []):
        if "://" not in address:
            raise ConfigError(name, "bootstrap", "addresses such as tcp://203.0.113.5:7400",
                              address)
    rate = float(config.get("requests-per-second", 50.0))
    return DhtSettings(
        k=int(config.get("k", 20)), alpha=int(config.get("alpha", 3)),
        request_timeout=float(config.get("request-timeout", 5.0)),
        lookup_timeout=float(config.get("lookup-timeout", 30.0)),
        refresh_interval=float(config.get("refresh-interval", 600.0)),
        refresh_timeout=float(config.get("refresh-timeout", 60.0)),
        join_refresh=bool(config.get("join-refresh", True)),
        join_peers=int(config.get("join-peers", 0)),
        record_lifetime=float(config.get("record-lifetime", 3600.0)),
        requests_per_second=rate, request_burst=rate * 4,
        limits=TableLimits(prefix_per_bucket=int(config.get("prefix-per-bucket", 2)),
                           prefix_per_table=int(config.get("prefix-per-table", 10))))


class NodeRpc:
    """DHT requests as requests on the node's ``dht`` topic, dialling when need be.

    It remembers the connections it dialled itself (the DHT's own, opened for a lookup,
    a refresh or joining) and when the DHT last used each, in either direction, so that
    :meth:`close_idle` can close them once idle. Connections the node had anyway, or that
    a peer dialled, are never its to close.
    """

    def __init__(self, service: DhtService) -> None:
        self._service = service
        #: Peer id -> when the DHT last used the connection it dialled (loop time).
        self.opened: dict[str, float] = {}
        self._in_flight: Counter[str] = Counter()
        #: Peers whose connection is being closed: a request meanwhile dials afresh.
        self._closing: set[str] = set()

    def used(self, peer_id: str) -> None:
        """The DHT just used the connection to ``peer_id`` (a request from it, too)."""
        if peer_id in self.opened:
            self.opened[peer_id] = asyncio.get_running_loop().time()

    def dialled(self, peer_id: str) -> None:
        """The DHT dialled ``peer_id`` itself (joining does, through ``connect``)."""
        self.opened[peer_id] = asyncio.get_running_loop().time()

    async def close_idle(self, idle: float, keep: Collection[str] = ()) -> int:
        """Close the connections this Rpc dialled that the DHT has not used for ``idle``
        seconds and that no request is using, except to peers in ``keep`` (discovery
        reported them: the node keeps those connected). Returns how many it closed."""
        node = self._service.node
        disconnect = getattr(node, "disconnect", None)  # a host without it keeps them
        now = asyncio.get_running_loop().time()
        idle_ones = [peer_id for peer_id, at in self.opened.items()
                     if now - at >= idle and not self._in_flight[peer_id]]
        for peer_id in idle_ones:
            del self.opened[peer_id]
        if disconnect is None:
            return 0
        closing = [p for p in idle_ones if p not in keep]
        self._closing.update(closing)

        async def close(peer_id: str) -> bool:
            try:
                return bool(await disconnect(peer_id, reason="idle DHT connection"))
            except Exception:
                log.exception("closing the idle DHT connection to %s failed", peer_id)
                return False
            finally:
                self._closing.discard(peer_id)

        # At once: each waits for its peer's goodbye (the host's disconnect), and a peer
        # that never answers must not hold up the others.
        return sum(await asyncio.gather(*map(close, closing)))

    def address_of(self, peer_id: str) -> str:
        """The remote address of the node's connection to ``peer_id`` ("" when it has
        none): for an accepted connection where it came from, for a dialled one the
        address that answered. The routing table caps contacts per network by it."""
        for peer in self._service.node.peers():
            if peer.peer_id == peer_id:
                return peer.address
        return ""

    async def call(self, peer_id: str, addresses: Sequence[str],
                   request: dict[str, Any]) -> dict[str, Any]:
        """Ask ``peer_id``; dial its first answering address when not connected."""
        node = self._service.node
        timeout = self._service.settings.request_timeout
        self._in_flight[peer_id] += 1
        try:
            return await self._call(node, peer_id, addresses, request, timeout)
        finally:
            self._in_flight[peer_id] -= 1
            if not self._in_flight[peer_id]:
                del self._in_flight[peer_id]
            self.used(peer_id)

    async def _call(self, node: Messenger, peer_id: str, addresses: Sequence[str],
                    request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if peer_id in self._closing or not any(p.peer_id == peer_id for p in node.peers()):
            for address in addresses[:DIALLED]:
                try:
                    async with asyncio.timeout(timeout):
                        answered = await node.connect(address)
                except Exception as exc:  # PeerUnavailable, TimeoutError, HandshakeError
                    log.debug("dialling %s for the DHT failed: %s", address, exc)
                    continue
                if answered != peer_id:
                    raise PeerUnavailable(f"{address} is {answered}, not {peer_id}")
                self.dialled(peer_id)
                break
            else:
                raise PeerUnavailable(f"no address of {peer_id} answered")
        reply = await node.request(peer_id, TOPIC, request, timeout=timeout)
        if not isinstance(reply, dict):
            raise PeerUnavailable(f"{peer_id} answered the DHT with {type(reply).__name__}")
        return reply


class DhtService:
    """Everything one node's DHT needs, shared by its app and discovery halves."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.settings = settings_of(name, config)
        self.bootstrap = tuple(config.get("bootstrap", []))
        self.find = tuple(config.get("find", []))
        self.provide = tuple(config.get("provide", []))
        self.rendezvous = tuple(config.get("rendezvous", []))
        self.advertise = tuple(config.get("advertise", []))
        self.lookup_interval = float(config.get("lookup-interval", 30.0))
        self.idle_timeout = float(config.get("idle-timeout", 60.0))
        self.rpc = NodeRpc(self)
        self.app = DhtApp(self)
        self.discovery = DhtDiscovery(self)
        self._node: Messenger | None = None
        self.dht: Dht | None = None
        self._events: DiscoveryEvents | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._reported: dict[str, PeerRecord] = {}

    @property
    def node(self) -> Messenger:
        """The node (set when the app half starts, before discovery starts)."""
        if self._node is None:
            raise PeerUnavailable("the DHT app has not started")
        return self._node

    # -- lifetime ----------------------------------------------------------------------

    def attach(self, node: Messenger) -> None:
        """The app half started: requests can go out through ``node``."""
        self._node = node

    async def start(self, events: DiscoveryEvents) -> None:
        """The discovery half started: the node listens, so its record can be signed."""
        self._events = events
        addresses = self.advertise or tuple(a for a in events.addresses if not is_wildcard(a))

        def sign(scope: str, listed: Sequence[str], lifetime: float) -> SignedPresence:
            return events.sign_presence(scope, listed, lifetime=lifetime)

        self.dht = Dht(events.peer_id, sign, self.rpc, self.settings, addresses,
                       source=self.rpc.address_of)
        self._task = asyncio.create_task(self._run(), name="dht-discovery")
        if self.idle_timeout:
            self._idle_task = asyncio.create_task(self._close_idle(), name="dht-idle")

    async def stop(self) -> None:
        """Cancel and await the background tasks."""
        tasks = [t for t in (self._task, self._idle_task) if t is not None]
        self._task = self._idle_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def handle(self, message: Message) -> dict[str, Any]:
        """Answer one DHT request from a peer."""
        if self.dht is None:
            raise PeerUnavailable("the DHT is starting; ask again in a moment")
        self.rpc.used(message.sender)
        return await self.dht.handle(message.sender, message.body)

    # -- the background task -----------------------------------------------------------

    async def _run(self) -> None:
        assert self.dht is not None
        next_refresh = next_provide = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not len(self.dht.table):
                    await self._join()
                now = loop.time()
                if now >= next_refresh and len(self.dht.table):
                    if next_refresh:
                        await self.dht.refresh()
                    next_refresh = now + self.settings.refresh_interval
                if now >= next_provide and len(self.dht.table):
                    for topic in self.provide:
                        stored = await self.dht.provide(topic)
                        log.info("provided %r: %d DHT nodes stored the record", topic, stored)
                    next_provide = now + min(self.settings.refresh_interval,
                                             self.settings.record_lifetime / 2)
                await self._look_up()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end discovery: log, wait, go on
                log.exception("DHT upkeep failed; retrying in %g s", self.lookup_interval)
            await asyncio.sleep(self.lookup_interval if len(self.dht.table) else
                                min(self.lookup_interval, 5.0))

    async def _close_idle(self) -> None:
        # Lookups dial peers they never talk to again: each connection costs both ends a
        # socket, keepalives and, through a relay, a circuit. The routing table keeps the
        # peers' records, so a later request (a refresh's ping) dials again.
        while True:
            await asyncio.sleep(self.idle_timeout / 2)
            try:
                closed = await self.rpc.close_idle(self.idle_timeout, keep=self._reported)
            except Exception:  # a bug must not end the sweep: log, go on
                log.exception("closing idle DHT connections failed")
                continue
            if closed and self.dht is not None:
                self.dht.counters["idle connections closed"] += closed
                log.debug("closed %d idle DHT connections", closed)

    async def _join(self) -> None:
        assert self.dht is not None
        contacts: list[tuple[str, Sequence[str]]] = []
        for address in self.bootstrap:
            try:
                async with asyncio.timeout(self.settings.request_timeout):
                    peer_id = await self.node.connect(address)
            except Exception as exc:
                log.info("DHT bootstrap %s unreachable: %s", address, exc)
                continue
            if peer_id != self.dht.peer_id:
                self.rpc.dialled(peer_id)
                contacts.append((peer_id, (address,)))
        if contacts and await self.dht.join(contacts):
            log.info("joined the DHT: %d contacts", len(self.dht.table))

    async def _look_up(self) -> None:
        assert self.dht is not None and self._events is not None
        connected = {p.peer_id for p in self.node.peers()}
        wanted: dict[str, SignedPresence | None] = {}
        for peer_id in self.find:
            if peer_id != self.dht.peer_id:
                wanted[peer_id] = await self.dht.find_peer(peer_id)
        for topic in self.rendezvous:
            for record in await self.dht.find_providers(topic):
                if record.peer_id != self.dht.peer_id:
                    wanted[record.peer_id] = record
        for peer_id, found in wanted.items():
            previous = self._reported.get(peer_id)
            if found is not None and found.addresses:
                report = PeerRecord(found.addresses, peer_id, self.name)
                if report != previous:
                    self._reported[peer_id] = report
                    self._events.peer_found(report)
            elif previous is not None and peer_id not in connected:
                del self._reported[peer_id]  # gone from the DHT and from us
                self._events.peer_lost(previous)


class DhtApp(App):
    """The DHT's app half: answers requests on the ``dht`` topic."""

    name = "dht"

    def __init__(self, service: DhtService) -> None:
        self.service = service

    async def start(self, node: Messenger) -> None:
        """Keep the node: DHT requests go out through it."""
        self.node = node
        self.service.attach(node)

    @handler(TOPIC)
    async def rpc(self, message: Message) -> dict[str, Any]:
        """One DHT request (PING, FIND_NODE, GET_PROVIDERS, ADD_PROVIDER): docs/wire.md."""
        return await self.service.handle(message)


class DhtDiscovery(Discovery):
    """The DHT's discovery half: reports the peers of ``find`` and ``rendezvous``."""

    #: What ``p2phost peers`` and ``doctor`` call it (else the class name: "DhtDiscovery").
    name = "dht-discovery"

    def __init__(self, service: DhtService) -> None:
        self.service = service

    async def start(self, events: DiscoveryEvents) -> None:
        """Sign this node's record and start joining (returns at once)."""
        await self.service.start(events)

    async def stop(self) -> None:
        """Stop every lookup and refresh."""
        await self.service.stop()

    def counters(self) -> dict[str, int]:
        """Contacts, lookups, records accepted and refused, requests refused."""
        dht = self.service.dht
        return {} if dht is None else dht.stats()

    def health(self) -> str:
        """Why the DHT has no contacts, and the fix, or ""."""
        dht = self.service.dht
        if dht is None or len(dht.table) or not self.service.bootstrap:
            return ""
        return ("no DHT bootstrap peer answered; fix: check [config.dht-discovery] bootstrap "
                "in p2phost.toml, and that a node runs there")
