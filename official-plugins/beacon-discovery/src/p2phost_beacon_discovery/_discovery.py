"""Beacon discovery: every node sends a small UDP beacon each ``interval`` seconds to a
multicast group (or a broadcast address) and reports the peers it hears; a peer silent for
``expiry`` seconds is reported lost. The way ZeroMQ's Zyre finds peers on a LAN.

Every beacon is a presence record signed by its sender (``_format.py``); a beacon that does
not verify, or is older than the newest heard from its peer, is dropped and counted before
anything is reported. Beacons go out on each link separately with that link's addresses
(``_links.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from p2phost_sdk import (
    AnnouncementError,
    ConfigError,
    Discovery,
    DiscoveryEvents,
    P2PHostError,
    PresenceBook,
    PresenceTable,
    RejectLog,
    check_announcement,
    check_scope,
)

from ._format import Beacon, decode, encode, fits, scope_tag
from ._links import ANY, Link, addresses_on, multicast_links

log = logging.getLogger("p2phost.plugin.beacon-discovery")


class BeaconError(P2PHostError):
    """The beacon socket could not be set up (port, group or interface)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class BeaconSettings:
    """``[config.beacon-discovery]``, checked."""

    scope: str = "default"
    port: int = 7450
    group: str = "239.255.77.77"
    interface: str = ""
    interval: float = 1.0
    expiry: float = 5.0
    ttl: int = 1
    advertise: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any],
                    plugin: str = "beacon-discovery") -> BeaconSettings:
        """Settings from a validated config table; ConfigError for values out of range."""
        values = {k.replace("-", "_"): v for k, v in config.items()}
        values["advertise"] = tuple(values.get("advertise") or ())
        settings = cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
        check_scope(settings.scope, plugin)
        if not 0 < settings.port < 65536:
            raise ConfigError(plugin, "port", "a UDP port 1-65535", settings.port)
        for key in ("group", "interface"):
            value = getattr(settings, key)
            if value and not _is_ipv4(value):
                raise ConfigError(plugin, key, "an IPv4 address", value)
        if not settings.group:
            raise ConfigError(plugin, "group", "a multicast group or broadcast address", "")
        if settings.interval <= 0:
            raise ConfigError(plugin, "interval", "seconds > 0", settings.interval)
        if settings.expiry < 2 * settings.interval:
            raise ConfigError(plugin, "expiry", "at least twice the interval", settings.expiry)
        if not 0 < settings.ttl < 256:
            raise ConfigError(plugin, "ttl", "1-255 hops", settings.ttl)
        return settings

    @property
    def multicast(self) -> bool:
        """Whether ``group`` is a multicast group (else beacons are broadcast)."""
        return ipaddress.IPv4Address(self.group).is_multicast


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


_FIX = ("set [config.beacon-discovery] interface to this host's LAN address (ip -4 addr), "
        "pick another port, or bring up an interface that can multicast")


def links_for(settings: BeaconSettings) -> list[Link]:
    """The links to beacon on: ``interface`` if set, else every one that can multicast
    (broadcast, and hosts whose interfaces cannot be read: the routing table decides)."""
    if settings.interface:
        return [Link(settings.interface, settings.interface)]
    if not settings.multicast:
        return [Link("broadcast", ANY)]
    return multicast_links() or [Link("default", ANY)]


def open_socket(settings: BeaconSettings, links: list[Link]) -> tuple[socket.socket, list[Link]]:
    """A non-blocking UDP socket that hears this scope's beacons on ``links``, and the
    links where joining the group worked. BeaconError when none did."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    joined: list[Link] = []
    errors: list[str] = []
    try:
        # Several nodes on one host share the port; each still hears every beacon.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if settings.multicast:
            # Bound to the group, Linux delivers only that group's datagrams to us.
            sock.bind((settings.group, settings.port))
            for link in links:
                try:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack(
                        "4s4s", socket.inet_aton(settings.group), socket.inet_aton(link.ip)))
                except OSError as exc:
                    errors.append(f"{link.name} ({link.ip}): {exc}")
                else:
                    joined.append(link)
            if not joined:
                raise OSError(f"joining {settings.group} failed on every interface: "
                              + "; ".join(errors))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("", settings.port))
            joined = links
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BeaconError(f"cannot beacon on {settings.group} port {settings.port}: {exc}",
                          _FIX) from exc
    for error in errors:
        log.warning("no beacons on %s (the other interfaces still beacon)", error)
    return sock, joined


def sender_for(settings: BeaconSettings, link: Link) -> socket.socket:
    """A non-blocking socket that sends beacons out of ``link`` (from its address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        if settings.multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, settings.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if link.ip != ANY:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(link.ip))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((link.ip, 0))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BeaconError(f"cannot send beacons from {link.name} ({link.ip}): {exc}",
                          _FIX) from exc
    return sock


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: BeaconDiscovery) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._received(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("beacon socket error: %s", exc)


class BeaconDiscovery(Discovery):
    """Finds peers by UDP beacons; one instance per node."""

    def __init__(self, settings: BeaconSettings, *, name: str = "beacon-discovery",
                 logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.name = name
        self.log = logger or log
        self.rejected = RejectLog(self.log)
        self.book = PresenceBook()
        self._tag = scope_tag(settings.scope)
        self._peers = PresenceTable(settings.expiry)
        self._events: DiscoveryEvents | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._senders: list[tuple[Link, socket.socket]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._send_failed = False

    async def start(self, events: DiscoveryEvents) -> None:
        """Open the socket and start beaconing and expiring."""
        self._events = events
        loop = asyncio.get_running_loop()
        sock, links = open_socket(self.settings, links_for(self.settings))
        try:
            self._senders = [(link, sender_for(self.settings, link)) for link in links]
        except BeaconError:
            sock.close()
            self._close_senders()
            raise
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        self.log.info("beaconing on %s", ", ".join(f"{link.name} ({link.ip})"
                                                   for link, _ in self._senders))
        self._tasks = [asyncio.create_task(self._announce(), name=f"{self.name} announce"),
                       asyncio.create_task(self._expire(), name=f"{self.name} expire")]

    async def stop(self) -> None:
        """Cancel the loops, send a goodbye beacon and close the socket."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._transport is not None:
            self._send(goodbye=True)
            self._transport.close()
            self._transport = None
        self._close_senders()
        self._events = None

    def _close_senders(self) -> None:
        for _, sock in self._senders:
            sock.close()
        self._senders = []

    def counters(self) -> dict[str, int]:
        """Beacons accepted, and rejected by reason."""
        return {"accepted": self.book.accepted, "peers": len(self._peers),
                **self.rejected.reasons}

    def _beacon(self, link: Link, *, goodbye: bool) -> bytes:
        assert self._events is not None
        listed = self.settings.advertise or tuple(self._events.addresses)
        addresses = fits(addresses_on(link, listed, strict=not self.settings.advertise))
        record = self._events.sign_presence(self.settings.scope, addresses,
                                            lifetime=self.settings.expiry, goodbye=goodbye)
        return encode(Beacon.of(record))

    def _send(self, *, goodbye: bool = False) -> None:
        if self._transport is None or self._events is None:
            return
        failed = []
        for link, sock in self._senders:
            try:
                sock.sendto(self._beacon(link, goodbye=goodbye),
                            (self.settings.group, self.settings.port))
            except OSError as exc:
                failed.append(f"{link.name}: {exc}")
        if failed and not self._send_failed:
            # A LAN that comes and goes must not end discovery: say so once, keep trying.
            self.log.warning("cannot send beacons to %s:%d on %s (will keep trying)",
                             self.settings.group, self.settings.port, "; ".join(failed))
        self._send_failed = bool(failed)

    async def _announce(self) -> None:
        while True:
            self._send()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.interval):
                    await self._wake.wait()
                # Woken early by a newcomer: answer it soon, but never flood the LAN.
                await asyncio.sleep(min(0.05, self.settings.interval))

    async def _expire(self) -> None:
        period = min(self.settings.interval, self.settings.expiry / 4)
        while True:
            await asyncio.sleep(period)
            for record in self._peers.expired():
                self.log.info("lost peer %s: no beacon for %gs", record.peer_id,
                              self.settings.expiry)
                if self._events is not None:
                    self._events.peer_lost(record)

    def _received(self, data: bytes, sender: str) -> None:
        events = self._events
        if events is None:
            return
        try:
            beacon = decode(data)
        except AnnouncementError as exc:
            self.rejected.reject(sender, str(exc))
            return
        if beacon.scope_tag != self._tag or beacon.peer_id == events.peer_id:
            return
        try:  # before anything is reported: forged, expired and replayed beacons stop here
            self.book.accept(beacon.presence(self.settings.scope))
        except AnnouncementError as exc:
            self.rejected.reject(sender, str(exc))
            return
        if beacon.goodbye:
            gone = self._peers.remove(beacon.peer_id)
            if gone is not None:
                self.log.info("lost peer %s: it said goodbye", beacon.peer_id)
                events.peer_lost(gone)
            return
        try:
            record = check_announcement(beacon.peer_id, list(beacon.addresses),
                                        source=self.name, hosts=[sender])
        except AnnouncementError as exc:
            self.rejected.reject(sender, str(exc))
            return
        is_new = beacon.peer_id not in self._peers
        if self._peers.heard(record):
            self.log.info("found peer %s at %s", record.peer_id, ", ".join(record.addresses))
            events.peer_found(record)
        if is_new:
            self._wake.set()

    def __repr__(self) -> str:
        return (f"BeaconDiscovery(scope={self.settings.scope!r}, "
                f"group={self.settings.group}:{self.settings.port}, peers={len(self._peers)})")

