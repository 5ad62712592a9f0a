"""MQTT topics through aiomqtt, speaking MQTT 5 so that the marker is a user property.

An acknowledged in mapping keeps a persistent session (client id from the mapping, clean
start off, a long session expiry) subscribed with QoS 1, and acknowledges by hand
(paho-mqtt 2's ``manual_ack``): the broker holds what comes while the node is away and
resends what it never acknowledged. Out mappings publish with QoS 1 when acknowledged
(each publish waits for the PUBACK), QoS 0 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ._endpoint import MARKER, Endpoint, Incoming
from ._errors import BrokerUnavailable

_client_log = logging.getLogger("p2phost.plugin.broker-bridge.mqtt")
_client_log.setLevel(logging.CRITICAL)  # paho logs every lost socket; the app logs once
_SESSION_EXPIRY = 7 * 24 * 3600


class MqttEndpoint(Endpoint):
    """One aiomqtt client."""

    _client: aiomqtt.Client | None = None
    _props: Any = None

    async def open(self) -> None:
        m = self.mapping
        parts = urlsplit(m.broker)
        durable = m.direction == "in" and m.acknowledged
        identifier = (m.durable_name(self.peer_id) if durable
                      else f"p2phost-bridge-{secrets.token_hex(8)}")
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if durable:
            connect.SessionExpiryInterval = _SESSION_EXPIRY
            # The broker sends at most this many unacknowledged messages: that bounds
            # aiomqtt's queue, which must never be full (it would discard a message that
            # then comes again only after a reconnect).
            connect.ReceiveMaximum = self.queue
        client = aiomqtt.Client(
            parts.hostname or "127.0.0.1", parts.port or 1883, username=parts.username,
            password=parts.password, identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5, clean_start=not durable, properties=connect,
            keepalive=15, timeout=self.timeout, logger=_client_log,
            max_queued_incoming_messages=None if durable else self.queue)
        if durable:
            client._client.manual_ack_set(True)  # aiomqtt has no API for it
        try:
            await client.__aenter__()
            if m.direction == "in":
                await client.subscribe(m.name, qos=1 if m.acknowledged else 0)
        except aiomqtt.MqttError as exc:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise BrokerUnavailable(f"cannot reach MQTT for {m.where}: {exc}") from exc
        self._client = client
        self._props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._props.UserProperty = [(MARKER, self.peer_id)]

    async def publish(self, payload: bytes) -> None:
        assert self._client is not None
        await self._client.publish(self.mapping.name, payload,
                                   qos=1 if self.mapping.acknowledged else 0,
                                   properties=self._props)

    async def receive(self) -> AsyncIterator[Incoming]:
        client = self._client
        assert client is not None
        manual = self.mapping.acknowledged
        async for message in client.messages:
            props = getattr(message.properties, "UserProperty", None) or []
            marked = any(key == MARKER for key, _ in props)
            payload = message.payload if isinstance(message.payload, bytes) else \
                str(message.payload or "").encode()
            ack = None
            if manual and message.qos > 0:
                ack = _acker(client, message.mid)
            yield Incoming(payload, marked, ack)
        raise BrokerUnavailable(f"the MQTT broker closed the connection ({self.mapping.where})")

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.__aexit__(None, None, None)
        self._client = None


def _acker(client: aiomqtt.Client, mid: int) -> Any:
    async def ack() -> None:
        client._client.ack(mid, 1)
    return ack
