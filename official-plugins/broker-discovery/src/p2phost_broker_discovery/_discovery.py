"""Broker discovery: what both back ends share (settings, lifetime, reporting, retries).

Every entry on the broker is a presence record signed by its peer (``_format.py``): one
that does not verify, names another peer than its key, or is older than the newest seen
is dropped and counted before anything is reported. Anyone who can write to the broker can
delete or overwrite entries, but cannot make a node dial an address the peer did not sign,
and a peer is lost only by its own signed goodbye or when its newest record expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from p2phost_sdk import (
    AnnouncementError,
    ConfigError,
    Discovery,
    DiscoveryEvents,
    PeerRecord,
    PresenceBook,
    RejectLog,
    SignedPresence,
    cancel_and_wait,
    check_announcement,
    check_scope,
    is_wildcard,
    with_host,
)

from ._format import decode, encode

log = logging.getLogger("p2phost.plugin.broker-discovery")
#: Seconds any single broker operation may take.
BROKER_TIMEOUT = 5.0
SCHEMES = ("redis", "rediss", "nats", "tls")


@dataclass(frozen=True)
class BrokerSettings:
    """``[config.broker-discovery]``, checked."""

    url: str = "redis://127.0.0.1:6379/0"
    scope: str = "default"
    interval: float = 1.0
    expiry: float = 5.0
    advertise: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any],
                    plugin: str = "broker-discovery") -> BrokerSettings:
        """Settings from a validated config table; ConfigError for values out of range."""
        settings = cls(url=config.get("url", cls.url), scope=config.get("scope", "default"),
                       interval=config.get("interval", 1.0), expiry=config.get("expiry", 5.0),
                       advertise=tuple(config.get("advertise") or ()))
        check_scope(settings.scope, plugin)
        if urlsplit(settings.url).scheme not in SCHEMES:
            raise ConfigError(plugin, "url", "redis://HOST:PORT/DB or nats://HOST:PORT",
                              settings.url)
        if settings.interval <= 0:
            raise ConfigError(plugin, "interval", "seconds > 0", settings.interval)
        if settings.expiry < 2 * settings.interval:
            raise ConfigError(plugin, "expiry", "at least twice the interval", settings.expiry)
        return settings

    @property
    def backend(self) -> str:
        """``redis`` or ``nats``."""
        return "nats" if urlsplit(self.url).scheme in ("nats", "tls") else "redis"


async def cancel_surely(task: asyncio.Task[Any], timeout: float = 5.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again if a client library swallowed
    it; after ``timeout`` seconds it is left to end on its own (and logged)."""
    for _ in range(max(1, int(timeout / 0.1))):
        if await cancel_and_wait(task, 0.1):
            return
    log.error("%s did not stop within %gs of being cancelled", task.get_name(), timeout)


class BrokerDiscovery(Discovery):
    """Presence through a broker. Subclasses talk to one kind of broker."""

    def __init__(self, settings: BrokerSettings, *, name: str = "broker-discovery",
                 logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.name = name
        self.log = logger or log
        self.rejected = RejectLog(self.log)
        self.book = PresenceBook()
        self.events: DiscoveryEvents | None = None
        self.known: dict[str, PeerRecord] = {}
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._local_ip: str | None = None

    async def start(self, events: DiscoveryEvents) -> None:
        """Start the heartbeat loop (it connects, and reconnects, by itself)."""
        self.events = events
        self._task = asyncio.create_task(self._run(), name=f"{self.name} heartbeat")

    async def stop(self) -> None:
        """Stop the heartbeats, remove our presence (the goodbye) and disconnect."""
        if self._task is not None:
            await cancel_surely(self._task)
            self._task = None
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                await self.goodbye()
        except Exception as exc:  # the broker may be gone; stopping must still finish
            self.log.debug("no goodbye on %s: %s", self.settings.url, exc)
        await self.disconnect()
        self.events = None

    def counters(self) -> dict[str, int]:
        """Entries accepted, rejected by reason, and whether the broker is failing."""
        return {"accepted": self.book.accepted, "peers": len(self.known),
                "broker_down": int(self._failing), **self.rejected.reasons}

    def health(self) -> str:
        """Why discovery is not working right now, with the fix ("" when it is)."""
        if not self._failing:
            return ""
        return (f"broker {self.settings.url} is unreachable (retrying every "
                f"{self.settings.interval:g}s); fix: start it, or correct "
                f"[config.{self.name}] url in p2phost.toml")

    def entry(self, *, goodbye: bool = False) -> bytes:
        """This node's signed presence entry (or goodbye) for the broker."""
        assert self.events is not None
        return encode(self.events.sign_presence(self.settings.scope, self.addresses,
                                                lifetime=self.settings.expiry,
                                                goodbye=goodbye))

    @property
    def addresses(self) -> list[str]:
        """What this node announces: wildcard hosts become the IP that reaches the broker."""
        assert self.events is not None
        addresses = list(self.settings.advertise or self.events.addresses)
        if self._local_ip is None:
            return addresses
        return [with_host(a, self._local_ip) if is_wildcard(a) else a for a in addresses]

    async def _find_local_ip(self) -> None:
        # The source address the routing table picks for the broker: a UDP "connect"
        # sends nothing. Peers that share the broker can most likely reach us there.
        parts = urlsplit(self.settings.url)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(parts.hostname or "127.0.0.1", parts.port or 9,
                                       type=socket.SOCK_DGRAM)
        family, _, _, _, target = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(target)
            self._local_ip = str(probe.getsockname()[0])

    async def _run(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            try:
                async with asyncio.timeout(BROKER_TIMEOUT):
                    if self._local_ip is None:
                        await self._find_local_ip()
                    await self.heartbeat()
                if self._failing:
                    self.log.info("broker %s is reachable again", self.settings.url)
                self._failing = False
            except Exception as exc:  # any broker trouble: say so once, retry next beat
                if task.cancelling():
                    # Client libraries turn our cancellation into their own errors.
                    raise asyncio.CancelledError from exc
                if not self._failing:
                    self.log.warning("broker %s: %s: %s (retrying every %gs)",
                                     self.settings.url, type(exc).__name__, exc,
                                     self.settings.interval)
                self._failing = True
                await self.disconnect()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.interval):
                    await self.wake.wait()

    def parse(self, data: bytes, sender: str,
              owner: str | None = None) -> tuple[SignedPresence, PeerRecord | None] | None:
        """A verified entry from the broker and its peer record (None for a goodbye), or
        None (counted and logged) when it is malformed, forged, replayed or expired."""
        try:
            presence = decode(data, scope=self.settings.scope)
            if owner is not None and presence.peer_id != owner:
                raise AnnouncementError("the key names another peer id")
            self.book.accept(presence)
            if presence.goodbye:
                return presence, None
            return presence, check_announcement(presence.peer_id, list(presence.addresses),
                                                source=self.name)
        except AnnouncementError as exc:
            self.rejected.reject(sender, str(exc))
            return None

    def lapsed(self) -> list[str]:
        """Known peers whose newest signed record has expired."""
        now = time.time() * 1000
        return [peer_id for peer_id in self.known
                if (newest := self.book.newest(peer_id)) is None or newest.expires <= now]

    def found(self, record: PeerRecord) -> None:
        """Report ``record`` if it is new or changed (and not us)."""
        assert record.peer_id is not None
        if self.events is None or record.peer_id == self.events.peer_id:
            return
        if self.known.get(record.peer_id) != record:
            self.known[record.peer_id] = record
            self.log.info("found peer %s at %s", record.peer_id, ", ".join(record.addresses))
            self.events.peer_found(record)

    def lost(self, peer_id: str) -> None:
        """Report ``peer_id`` lost if it was known."""
        record = self.known.pop(peer_id, None)
        if record is not None and self.events is not None:
            self.log.info("lost peer %s", peer_id)
            self.events.peer_lost(record)

    @abstractmethod
    async def heartbeat(self) -> None:
        """Connect if needed, refresh our presence, and report what changed."""

    @abstractmethod
    async def goodbye(self) -> None:
        """Remove our presence now (on stop)."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Drop the broker connection (idempotent; it is remade by the next heartbeat)."""
