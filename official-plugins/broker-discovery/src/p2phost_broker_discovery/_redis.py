"""Presence in Redis: one key per node with a TTL, listed by SCAN; PUBLISH wakes the others."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from ._discovery import BROKER_TIMEOUT, BrokerDiscovery, cancel_surely

#: Most presence keys read per poll (a flood of keys must not exhaust memory).
MAX_KEYS = 10_000


class RedisDiscovery(BrokerDiscovery):
    """Presence keys ``p2phost:presence:SCOPE:PEERID`` with a TTL of ``expiry``."""

    _redis: aioredis.Redis | None = None
    _pubsub: aioredis.client.PubSub | None = None
    _listener: asyncio.Task[None] | None = None

    @property
    def prefix(self) -> str:
        """Every presence key of this scope starts with this."""
        return f"p2phost:presence:{self.settings.scope}:"

    @property
    def channel(self) -> str:
        """Joins and goodbyes are published here, to wake the others."""
        return f"p2phost:presence:{self.settings.scope}"

    async def heartbeat(self) -> None:
        """Refresh our key, then list every key of the scope and report what changed."""
        assert self.events is not None
        joining = self._redis is None or self._listener is None or self._listener.done()
        if joining:
            await self.disconnect()
            await self._connect()
        assert self._redis is not None
        await self._redis.set(self.prefix + self.events.peer_id, self.entry(),
                              px=int(self.settings.expiry * 1000))
        if joining:
            await self._redis.publish(self.channel, b"join")
        await self._poll()

    async def _connect(self) -> None:
        self._redis = aioredis.from_url(self.settings.url, socket_timeout=BROKER_TIMEOUT,
                                        socket_connect_timeout=BROKER_TIMEOUT)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)
        self._listener = asyncio.create_task(self._listen(self._pubsub),
                                             name=f"{self.name} subscription")

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=self.settings.interval)
            if message is not None:
                self.wake.set()

    async def _poll(self) -> None:
        assert self._redis is not None
        keys = await self._scan()
        values = await self._redis.mget(keys) if keys else []
        for key, value in zip(keys, values, strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            owner = key.decode(errors="replace")[len(self.prefix):]
            raw = value if isinstance(value, bytes) else value.encode()
            parsed = self.parse(raw, sender=f"key {key[:120]!r}", owner=owner)
            if parsed is None:
                continue
            presence, record = parsed
            if record is None:  # its signed goodbye
                self.lost(presence.peer_id)
            else:
                self.found(record)
        # A missing or overwritten key proves nothing (anyone with access can do that):
        # a peer is lost when its newest signed record lapses.
        for peer_id in self.lapsed():
            self.lost(peer_id)

    async def _scan(self) -> list[bytes]:
        assert self._redis is not None
        keys: list[bytes] = []
        async for key in self._redis.scan_iter(match=self.prefix + "*", count=1000):
            keys.append(key)
            if len(keys) >= MAX_KEYS:
                self.log.warning("more than %d presence keys under %s*; reading the first",
                                 MAX_KEYS, self.prefix)
                break
        return keys

    async def goodbye(self) -> None:
        """Replace our entry by a signed goodbye and wake the others, so they report us lost
        at once (it lapses with the entry's expiry)."""
        if self._redis is not None and self.events is not None:
            await self._redis.set(self.prefix + self.events.peer_id, self.entry(goodbye=True),
                                  px=int(self.settings.expiry * 1000))
            await self._redis.publish(self.channel, b"bye")

    async def disconnect(self) -> None:
        """Stop listening and close both connections."""
        if self._listener is not None:
            await cancel_surely(self._listener)
            self._listener = None
        for closable in (self._pubsub, self._redis):
            if closable is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(BROKER_TIMEOUT):
                        await closable.aclose()
        self._pubsub = self._redis = None
