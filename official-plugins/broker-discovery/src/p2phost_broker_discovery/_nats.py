"""Presence over NATS: heartbeats on ``p2phost.presence.SCOPE``, silence means gone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from p2phost_sdk import PresenceTable

from ._discovery import BROKER_TIMEOUT, BrokerDiscovery, BrokerSettings


class NatsDiscovery(BrokerDiscovery):
    """Every node publishes a heartbeat each ``interval``; newcomers get answers at once."""

    def __init__(self, settings: BrokerSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._nc: Client | None = None
        self._peers = PresenceTable(settings.expiry)

    @property
    def subject(self) -> str:
        """Where this scope's heartbeats and goodbyes go."""
        return f"p2phost.presence.{self.settings.scope}"

    async def heartbeat(self) -> None:
        """Publish our heartbeat and report peers silent for ``expiry`` lost."""
        assert self.events is not None
        if self._nc is None or self._nc.is_closed:
            await self._connect()
        assert self._nc is not None
        await self._nc.publish(self.subject, self.entry())
        await self._nc.flush(timeout=int(BROKER_TIMEOUT))
        for record in self._peers.expired():
            assert record.peer_id is not None
            self.lost(record.peer_id)

    async def _connect(self) -> None:
        async def quiet(exc: Exception) -> None:
            self.log.debug("nats %s: %s", self.settings.url, exc)

        # The client reconnects by itself; our heartbeat loop retries the first connect.
        self._nc = await nats.connect(
            self.settings.url, connect_timeout=int(BROKER_TIMEOUT), allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=self.settings.interval,
            error_cb=quiet, name=f"p2phost {self.name}")
        await self._nc.subscribe(self.subject, cb=self._on_message)

    async def _on_message(self, message: Msg) -> None:
        if self.events is None:
            return
        parsed = self.parse(message.data, sender=f"subject {self.subject}")
        if parsed is None or parsed[0].peer_id == self.events.peer_id:
            return
        presence, record = parsed
        if record is None:  # its signed goodbye
            self._peers.remove(presence.peer_id)
            self.lost(presence.peer_id)
            return
        newcomer = presence.peer_id not in self._peers
        self._peers.heard(record)
        self.found(record)
        if newcomer:
            self.wake.set()  # answer now so it need not wait a whole interval for us

    async def goodbye(self) -> None:
        """Publish a goodbye so the others report us lost at once."""
        if self._nc is not None and self._nc.is_connected and self.events is not None:
            await self._nc.publish(self.subject, self.entry(goodbye=True))
            await self._nc.flush(timeout=int(BROKER_TIMEOUT))

    async def disconnect(self) -> None:
        """Close the client (its subscription tasks with it)."""
        client, self._nc = self._nc, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(BROKER_TIMEOUT):
                    await client.close()

