"""mDNS discovery: register this node as a DNS-SD service, browse for the others.

python-zeroconf keeps browse results (PTR records) for at least 1125 s whatever their TTL,
so a peer that dies without a goodbye would linger for that long. This plugin therefore
checks the peers it knows itself: their SRV/TXT records carry a short TTL (``ttl``), and
once those expire a peer must answer a query or it is reported lost. Lost peers stay
"dormant" and are asked again now and then, which is how a healed partition is noticed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2phost_sdk import (
    AnnouncementError,
    ConfigError,
    Discovery,
    DiscoveryEvents,
    P2PHostError,
    PeerRecord,
    RejectLog,
    TaskOwner,
    check_scope,
)

from ._records import SERVICE_TYPE, instance_name, parse_service, txt_properties

log = logging.getLogger("p2phost.plugin.mdns-discovery")
#: Most dormant (lost) peers remembered for re-checking.
MAX_DORMANT = 1024
#: Seconds stopping waits for the plugin's tasks.
STOP_TIMEOUT = 5.0


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
        self._events: DiscoveryEvents | None = None
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._own = ""
        self._known: dict[str, PeerRecord] = {}
        self._dormant: set[str] = set()
        self._resolving: set[str] = set()
        self._tasks = TaskOwner("mdns-discovery", logger=self.log)

    async def start(self, events: DiscoveryEvents) -> None:
        """Register this node's service and start browsing and checking peers."""
        self._events = events
        self._own = instance_name(events.peer_id)
        ips = interface_addresses(self.settings.interfaces)
        try:
            self._zc = AsyncZeroconf(interfaces=ips, ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise MdnsError(f"cannot open the mDNS socket on {', '.join(ips)}: {exc}") from exc
        # Probing and announcing take ~1.5 s; start() must not wait for them.
        self._spawn(self._register(self._service_info(events, ips)))
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [SERVICE_TYPE],
                                            handlers=[self._on_change])
        self._spawn(self._check_peers())

    async def stop(self) -> None:
        """Send goodbye packets, cancel every task and close the sockets."""
        await self._tasks.close(STOP_TIMEOUT)
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            await self._zc.async_unregister_all_services()  # the goodbye packets
            await self._zc.async_close()
            self._zc = None
        self._events = None

    async def _register(self, info: AsyncServiceInfo) -> None:
        assert self._zc is not None
        announced = await self._zc.async_register_service(info)
        await announced

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(work, f"mdns-discovery {getattr(work, '__name__', 'task')}")

    def _service_info(self, events: DiscoveryEvents, ips: list[str]) -> AsyncServiceInfo:
        addresses = list(self.settings.advertise or events.addresses)
        port = next((p for p in map(_port, addresses) if p), 0)
        ttl = self.settings.ttl
        return AsyncServiceInfo(
            SERVICE_TYPE, self._own, port=port,
            properties=txt_properties(events.peer_id, self.settings.scope, addresses),
            server=f"{events.peer_id}.local.", parsed_addresses=ips,
            host_ttl=ttl, other_ttl=ttl,
        )

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if name.lower() == self._own.lower() or self._events is None:
            return
        if state_change is ServiceStateChange.Removed:  # a goodbye
            self._dormant.discard(name)
            self._lose(name, "it said goodbye")
        elif name not in self._resolving:
            self._resolving.add(name)
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> bool:
        """Ask for ``name``'s records; report it found (or changed). False: no answer."""
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            assert self._zc is not None
            if not await info.async_request(self._zc.zeroconf,
                                            self.settings.query_timeout * 1000):
                return False
            self._found(name, info)
            return True
        finally:
            self._resolving.discard(name)

    def _found(self, name: str, info: AsyncServiceInfo) -> None:
        sender = info.server or name
        try:
            scope, record = parse_service(name, info.text or b"", info.properties,
                                          info.parsed_addresses(), source=self.name)
        except AnnouncementError as exc:
            self.rejected.reject(sender, str(exc))
            return
        if scope != self.settings.scope or self._events is None:
            return
        if record.peer_id == self._events.peer_id:
            return
        self._dormant.discard(name)
        if self._known.get(name) != record:
            self._known[name] = record
            self.log.info("found peer %s at %s", record.peer_id, ", ".join(record.addresses))
            self._events.peer_found(record)

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
            for name, answered in zip(names, answers, strict=True):
                if not answered and name in self._known:
                    self._lose(name, "its records expired and it did not answer")
                    if len(self._dormant) < MAX_DORMANT:
                        self._dormant.add(name)

    def __repr__(self) -> str:
        return f"MdnsDiscovery(scope={self.settings.scope!r}, peers={len(self._known)})"


def _port(address: str) -> int:
    """The port of an address such as ``tcp://HOST:PORT`` (for the SRV record), else 0."""
    try:
        return urlsplit(address).port or 0
    except ValueError:
        return 0
