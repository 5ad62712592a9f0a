"""Beacon discovery: every node sends a small UDP beacon each ``interval`` seconds to a
multicast group (or a broadcast address) and reports the peers it hears; a peer silent for
``expiry`` seconds is reported lost. The way ZeroMQ's Zyre finds peers on a LAN.
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
    PresenceTable,
    RejectLog,
    check_announcement,
    check_scope,
)

from ._format import Beacon, decode, encode, scope_tag

log = logging.getLogger("p2phost.plugin.beacon-discovery")


class BeaconError(P2PHostError):
    """The beacon socket could not be set up (port, group or interface)."""


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


def open_socket(settings: BeaconSettings) -> socket.socket:
    """A non-blocking UDP socket that hears and sends this scope's beacons."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        # Several nodes on one host share the port; each still hears every beacon.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if settings.multicast:
            # Bound to the group, Linux delivers only that group's datagrams to us.
            sock.bind((settings.group, settings.port))
            local = socket.inet_aton(settings.interface or "0.0.0.0")
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            struct.pack("4s4s", socket.inet_aton(settings.group), local))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, settings.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if settings.interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("", settings.port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BeaconError(
            f"cannot beacon on {settings.group} port {settings.port}: {exc}; set "
            "[config.beacon-discovery] interface to this host's LAN address, pick another "
            "port, or make sure the host has a multicast route (224.0.0.0/4)"
        ) from exc
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
        self._tag = scope_tag(settings.scope)
        self._peers = PresenceTable(settings.expiry)
        self._events: DiscoveryEvents | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._send_failed = False

    async def start(self, events: DiscoveryEvents) -> None:
        """Open the socket and start beaconing and expiring."""
        self._events = events
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), sock=open_socket(self.settings))
        self._transport = transport
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
        self._events = None

    def _beacon(self, *, goodbye: bool) -> bytes:
        assert self._events is not None
        addresses = () if goodbye else (self.settings.advertise or tuple(self._events.addresses))
        return encode(Beacon(self._tag, self._events.peer_id, addresses, goodbye=goodbye))

    def _send(self, *, goodbye: bool = False) -> None:
        if self._transport is None or self._events is None:
            return
        try:
            self._transport.sendto(self._beacon(goodbye=goodbye),
                                   (self.settings.group, self.settings.port))
        except OSError as exc:
            # A LAN that comes and goes must not end discovery: say so once, keep trying.
            if not self._send_failed:
                self.log.warning("cannot send beacons to %s:%d: %s (will keep trying)",
                                 self.settings.group, self.settings.port, exc)
            self._send_failed = True
        else:
            self._send_failed = False

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

