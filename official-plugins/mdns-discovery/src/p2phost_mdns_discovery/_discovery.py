"""mDNS discovery: register this node as a DNS-SD service, browse for the others.

python-zeroconf keeps browse results (PTR records) for at least 1125 s whatever their TTL,
so a peer that dies without a goodbye would linger for that long. This plugin therefore
checks the peers it knows itself: their SRV/TXT records carry a short TTL (``ttl``), and
once those expire a peer must answer a query or it is reported lost. Lost peers stay
"dormant" and are asked again now and then, which is how a healed partition is noticed.

Each interface gets a responder of its own that hears only queries arriving there and
answers with that interface's address and a TXT record signed for it (RFC 6762 section
15), so a node on two LANs is announced to each with the right address. One browser on
every interface finds the others; a TXT record that does not verify, or is older than the
newest seen from its peer, is dropped and counted. A goodbye (TTL 0, standard DNS-SD)
cannot be signed: it only makes the plugin ask the peer at once, and the peer is lost
when it does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ifaddr
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf, current_time_millis
from zeroconf._dns import DNSText
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _CLASS_IN, _TYPE_TXT

from p2phost_sdk import (
    AnnouncementError,
    ConfigError,
    Discovery,
    DiscoveryEvents,
    P2PHostError,
    PeerRecord,
    PresenceBook,
    RejectLog,
    TaskOwner,
    check_scope,
    link_addresses,
)

from ._records import (
    SERVICE_TYPE,
    instance_name,
    parse_presence,
    to_record,
    txt_items,
    txt_properties,
)

log = logging.getLogger("p2phost.plugin.mdns-discovery")
#: Most dormant (lost) peers remembered for re-checking.
MAX_DORMANT = 1024
#: Seconds a TXT record's signature stays valid; it is signed again a third of the way in.
RECORD_LIFETIME = 600.0
# Linux: without it, a socket hears a group joined on *any* interface by any socket.
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


class MdnsError(P2PHostError):
    """mDNS could not start (no usable interface, or the multicast socket failed)."""


@dataclass(frozen=True)
class MdnsSettings:
    """``[config.mdns-discovery]``, checked."""

    scope: str = "default"
    interfaces: tuple[str, ...] = ()
    ttl: int = 15
    advertise: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any],
                    plugin: str = "mdns-discovery") -> MdnsSettings:
        """Settings from a validated config table; ConfigError for values out of range."""
        settings = cls(scope=config.get("scope", "default"),
                       interfaces=tuple(config.get("interfaces") or ()),
                       ttl=config.get("ttl", 15),
                       advertise=tuple(config.get("advertise") or ()))
        check_scope(settings.scope, plugin)
        if not 2 <= settings.ttl <= 4500:
            raise ConfigError(plugin, "ttl", "seconds from 2 to 4500", settings.ttl)
        return settings

    @property
    def query_timeout(self) -> float:
        """Seconds a peer has to answer once its records expired."""
        return min(3.0, max(0.5, self.ttl / 4))


def interface_addresses(wanted: tuple[str, ...]) -> list[str]:
    """IPv4 addresses to run mDNS on: those of ``wanted`` (names or addresses), or of every
    interface but loopback (loopback when it is all there is). MdnsError when none fits."""
    adapters = ifaddr.get_adapters()
    by_name = {a.nice_name: [str(ip.ip) for ip in a.ips if ip.is_IPv4] for a in adapters}
    every = [ip for ips in by_name.values() for ip in ips]
    if not wanted:
        outside = [ip for ip in every if not ipaddress.IPv4Address(ip).is_loopback]
        chosen = outside or every
    else:
        chosen = []
        for item in wanted:
            found = by_name.get(item, [item] if item in every else [])
            if not found:
                raise MdnsError(
                    f"interface {item!r} has no IPv4 address here (interfaces: "
                    f"{', '.join(sorted(by_name)) or 'none'}); fix [config.mdns-discovery] "
                    "interfaces in p2phost.toml")
            chosen.extend(found)
    if not chosen:
        raise MdnsError("no network interface with an IPv4 address for mDNS")
    return list(dict.fromkeys(chosen))


class MdnsDiscovery(Discovery):
    """DNS-SD over multicast DNS with python-zeroconf; one instance per node."""

    def __init__(self, settings: MdnsSettings, *, name: str = "mdns-discovery",
                 logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.name = name
        self.log = logger or log
        self.rejected = RejectLog(self.log)
        self.book = PresenceBook()
        self._events: DiscoveryEvents | None = None
        self._zc: AsyncZeroconf | None = None
        self._responders: list[tuple[str, AsyncZeroconf, AsyncServiceInfo]] = []
        self._browser: AsyncServiceBrowser | None = None
        self._own = ""
        self._known: dict[str, PeerRecord] = {}
        self._dormant: set[str] = set()
        self._resolving: set[str] = set()
        self._misses: dict[str, int] = {}
        self._tasks = TaskOwner("mdns-discovery", logger=self.log)

    async def start(self, events: DiscoveryEvents) -> None:
        """Register this node's service and start browsing and checking peers."""
        self._events = events
        self._own = instance_name(events.peer_id)
        ips = interface_addresses(self.settings.interfaces)
        try:
            for ip in ips:
                responder = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
                self._responders.append((ip, responder, self._service_info(events, ip)))
                _hear_only_own_link(responder)
            # On one interface its responder browses too. A second instance would bind
            # the same ip:5353 (SO_REUSEPORT): the kernel hands each unicast query (a
            # legacy DNS-SD client's, such as dig's) to one of the two by its source
            # port, and the browser's, holding no service, never answered half of them.
            self._zc = self._responders[0][1] if len(ips) == 1 else \
                AsyncZeroconf(interfaces=ips, ip_version=IPVersion.V4Only)
        except OSError as exc:
            await self._close_sockets()
            raise MdnsError(f"cannot open the mDNS socket on {', '.join(ips)}: {exc}") from exc
        # Announcing takes a moment; start() must not wait for it.
        for ip, responder, info in self._responders:
            self._spawn(self._register(responder, info), f"register on {ip}")
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [SERVICE_TYPE],
                                            handlers=[self._on_change])
        self._spawn(self._check_peers(), "check peers")
        self._spawn(self._resign(), "sign again")

    async def stop(self) -> None:
        """Send goodbye packets, cancel every task and close the sockets."""
        await self._tasks.close()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        await self._close_sockets()
        self._events = None

    async def _close_sockets(self) -> None:
        browser, self._zc = self._zc, None
        for _, responder, _ in self._responders:
            await responder.async_unregister_all_services()  # the goodbye packets
            await responder.async_close()
            if responder is browser:
                browser = None  # (one interface: it browsed too)
        self._responders = []
        if browser is not None:
            await browser.async_close()

    def counters(self) -> dict[str, int]:
        """TXT records accepted, and rejected by reason."""
        return {"accepted": self.book.accepted, "peers": len(self._known),
                **self.rejected.reasons}

    async def _register(self, responder: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        # The name is our peer id, unique by construction: probing for it would only let
        # anyone who answers for it keep us off the LAN.
        announced = await responder.async_register_service(info, cooperating_responders=True)
        await announced

    async def _resign(self) -> None:
        """Sign the TXT records again before their signatures lapse."""
        while True:
            await asyncio.sleep(RECORD_LIFETIME / 3)
            if self._events is None:
                return
            for index, (ip, responder, _) in enumerate(self._responders):
                info = self._service_info(self._events, ip)
                self._responders[index] = (ip, responder, info)
                await responder.async_update_service(info)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.spawn(work, name)

    def _service_info(self, events: DiscoveryEvents, ip: str) -> AsyncServiceInfo:
        """The service as announced on the link of ``ip``: its address, its TXT record."""
        listed = self.settings.advertise or tuple(events.addresses)
        addresses = link_addresses(listed, ip, strict=not self.settings.advertise)
        port = next((p for p in map(_port, addresses) if p), 0)
        record = events.sign_presence(self.settings.scope, addresses, lifetime=RECORD_LIFETIME)
        ttl = self.settings.ttl
        return AsyncServiceInfo(
            SERVICE_TYPE, self._own, port=port, properties=txt_properties(record),
            server=f"{events.peer_id}.local.", parsed_addresses=[ip],
            host_ttl=ttl, other_ttl=ttl,
        )

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if name.lower() == self._own.lower() or self._events is None:
            return
        if name in self._resolving:
            return
        self._resolving.add(name)
        if state_change is ServiceStateChange.Removed:
            # A goodbye carries no signature: anyone can send one. Ask the peer instead.
            self._spawn(self._confirm_goodbye(name), f"goodbye of {name}")
        else:
            self._spawn(self._resolve(name), f"resolve {name}")

    async def _confirm_goodbye(self, name: str) -> None:
        # The goodbye leaves the records in the cache for one more second (RFC 6762 10.1).
        await asyncio.sleep(1.2)
        if not await self._resolve(name) and not await self._resolve(name) \
                and name in self._known:
            self._dormant.discard(name)
            self._lose(name, "it said goodbye")

    async def _resolve(self, name: str) -> bool:
        """Ask for ``name``'s records; report it found (or changed). False: no answer."""
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            assert self._zc is not None
            # Multicast questions: every link's answer comes from that link's responder.
            if not await info.async_request(self._zc.zeroconf,
                                            self.settings.query_timeout * 1000,
                                            question_type=DNSQuestionType.QM):
                return self._heard(name)
            # Answered, even if by a forger whose records failed: a forged answer must
            # not make the real peer look gone. Its own record lapsing does (below).
            self._found(name, info)
            return True
        finally:
            self._resolving.discard(name)

    def _heard(self, name: str) -> bool:
        """Whether the cache holds a live TXT record of ``name`` that is its peer's newest
        signed one.

        A request resolves a name through one SRV record of the cache, and a forger's
        (with the cache-flush bit, anyone's records of a name replace the others) can
        linger there after its goodbye: the request then asks for the forger's host and
        times out although the peer answered. Its signed record is what says it is there.
        """
        record, zc = self._known.get(name), self._zc
        newest = self.book.newest(record.peer_id or "") if record is not None else None
        if newest is None or zc is None:
            return False
        now = current_time_millis()
        for txt in zc.zeroconf.cache.async_all_by_details(name, _TYPE_TXT, _CLASS_IN):
            if not isinstance(txt, DNSText) or txt.is_expired(now):
                continue
            with contextlib.suppress(AnnouncementError):  # a forger's: counted already
                if parse_presence(name, txt.text, txt_items(txt.text)) == newest:
                    return True
        return False

    def _found(self, name: str, info: AsyncServiceInfo) -> bool:
        """Report the peer a resolved service announces; False when it is not a valid one."""
        sender = info.server or name
        try:
            presence = parse_presence(name, info.text or b"", info.properties)
            if presence.scope != self.settings.scope or self._events is None:
                return False
            if presence.peer_id == self._events.peer_id:
                return True
            self.book.accept(presence)  # before anything is reported: forged or replayed
            record = to_record(presence, info.parsed_addresses(), source=self.name)
        except AnnouncementError as exc:
            self.rejected.reject(sender, str(exc))
            return False
        self._dormant.discard(name)
        if self._known.get(name) != record:
            self._known[name] = record
            self.log.info("found peer %s at %s", record.peer_id, ", ".join(record.addresses))
            self._events.peer_found(record)
        return True

    def _lose(self, name: str, why: str) -> None:
        record = self._known.pop(name, None)
        if record is not None and self._events is not None:
            self.log.info("lost peer %s: %s", record.peer_id, why)
            self._events.peer_lost(record)

    async def _check_peers(self) -> None:
        """Every ~ttl/4 s: known peers whose records expired must answer; dormant ones may."""
        period = max(0.25, self.settings.ttl / 4)
        rounds = 0
        while True:
            await asyncio.sleep(period)
            rounds += 1
            names = list(self._known)
            if rounds % 4 == 0:  # dormant peers less often: they are most likely gone
                names += sorted(self._dormant)
            names = [n for n in names if n not in self._resolving]
            self._resolving.update(names)
            answers = await asyncio.gather(*(self._resolve(n) for n in names))
            now = time.time() * 1000
            for name, answered in zip(names, answers, strict=True):
                record = self._known.get(name)
                newest = self.book.newest(record.peer_id or "") if record else None
                if newest is not None and newest.expires <= now:
                    answered = False  # its last signed record lapsed: only forgers answer
                if answered:
                    self._misses.pop(name, None)
                    continue
                # Twice: one answer lost to a busy LAN (or a forger's flush) is no death.
                self._misses[name] = self._misses.get(name, 0) + 1
                if self._misses[name] >= 2 and name in self._known:
                    del self._misses[name]
                    self._lose(name, "its records expired and it did not answer")
                    if len(self._dormant) < MAX_DORMANT:
                        self._dormant.add(name)

    def __repr__(self) -> str:
        return f"MdnsDiscovery(scope={self.settings.scope!r}, peers={len(self._known)})"


def _hear_only_own_link(responder: AsyncZeroconf) -> None:
    """Make ``responder`` hear only queries that arrive on its own interface (Linux), so
    it never answers a neighbour on another link with an address unreachable there."""
    listen = getattr(responder.zeroconf.engine, "_listen_socket", None)
    if listen is not None and sys.platform.startswith("linux"):
        listen.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)


def _port(address: str) -> int:
    """The port of an address such as ``tcp://HOST:PORT`` (for the SRV record), else 0."""
    try:
        return urlsplit(address).port or 0
    except ValueError:
        return 0
