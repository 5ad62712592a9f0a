"""MQTT as an inbox medium (Mosquitto or any 3.1.1 broker), through aiomqtt.

Each node's inbox is the topic ``p2phost/inbox/NAME``, read with QoS 1 by a client
whose id is ``p2phost-NAME``. A listening node keeps a persistent session
(``clean_session = false``): the broker holds its messages while it is away and
resends those it never acknowledged. Acknowledgements are manual (paho-mqtt 2's
``manual_ack``), sent once the node is done with a message. A second client, with a
clean session, publishes (QoS 1: each publish waits for the broker's PUBACK).

MQTT cannot tell whether anybody reads a topic, so a dialler learns of an unknown peer
id only when its OPEN gets no answer in time.

The broker drops what passes its queue limit for an absent session without telling
anyone; stored sends count what waits there and are refused before that (``_counts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from p2phost_sdk import TransportError
from p2phost_sdk.inbox import (
    Deliver,
    InboxFull,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumRefused,
    MediumUnavailable,
    backoff,
    stop_if_cancelled,
)

from ._counts import (
    Count,
    Limits,
    Watch,
    is_letter,
    marker,
    marker_topic,
    stored_topic,
    taken_topic,
)

log = logging.getLogger("p2phost.transport.mqtt")
# paho and aiomqtt report every lost socket as an error, and every forced disconnect as
# a warning; this module reports a lost broker once, as a warning, and reconnects.
_client_log = logging.getLogger("p2phost.transport.mqtt.client")
_client_log.setLevel(logging.CRITICAL)
_MAX_PACKET = 268_435_455  # the largest MQTT packet
_REFUSED_CODES = {4, 5}  # CONNACK: bad user name or password; not authorised


def inbox_topic(name: str) -> str:
    """The topic of inbox ``name``."""
    return f"p2phost/inbox/{name}"


_PROBE_WAIT = 0.5
#: Mosquitto's default ``max_queued_messages``.
BROKER_QUEUE_LIMIT = 1000
_TAKEN_EVERY = 0.2  # seconds between updates of the retained taken count
_CLAIM = 32  # places a sender claims at a time in an absent node's queue


class MqttMedium(Medium):
    """One node's link to one MQTT broker."""

    max_record_size = _MAX_PACKET - 1024  # room for the topic and the packet header

    def __init__(self, address: MediumAddress, *, peer_id: str = "",
                 broker_limit: int = BROKER_QUEUE_LIMIT) -> None:
        if address.parts.path not in ("", "/") or address.parts.query:
            raise TransportError(f"bad address {address.public!r}: expected mqtt://HOST:PORT "
                                 "(no path or query)")
        self.url = address.public
        self._host = address.parts.hostname or ""
        self._port = address.parts.port or 1883
        self._user = address.parts.username
        self._password = address.parts.password
        self._publisher: aiomqtt.Client | None = None
        self._publisher_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._subscriber: aiomqtt.Client | None = None
        self._inbox = ""
        self._persistent = True
        self._peer_id = peer_id
        #: What the broker queues at most per absent session (0: no limit).
        self.broker_limit = broker_limit
        self._watch = Watch(lambda: self._client(f"p2phost-watch-{secrets.token_hex(8)}",
                                                 clean=True))
        self._taken = self._taken_sent = Count()
        self._taken_at = 0.0
        self._taken_later: asyncio.Task[None] | None = None
        # inbox -> letters this sender stored there / places it claimed (the count shown)
        self._stored: dict[str, Count] = {}
        self._claims: dict[str, int] = {}

    def _client(self, identifier: str, *, clean: bool, manual_ack: bool = False) -> aiomqtt.Client:
        client = aiomqtt.Client(self._host, self._port, username=self._user,
                                password=self._password, identifier=identifier,
                                clean_session=clean, keepalive=15, timeout=10.0,
                                logger=_client_log)
        client.pending_calls_threshold = 1 << 30  # a window of publishes in flight is normal
        if manual_ack:
            # aiomqtt has no API for it; paho-mqtt 2 acknowledges on our word only.
            client._client.manual_ack_set(True)
        return client

    def _error(self, exc: aiomqtt.MqttError) -> Exception:
        # Only a CONNACK's code means "refused"; other codes are paho's (not connected...).
        if isinstance(exc, MqttConnectError) and exc.rc in _REFUSED_CODES:
            return MediumRefused(f"the MQTT broker at {self.url} refused the connection: {exc} "
                                 "(fix the user and password in the address)")
        return MediumUnavailable(f"MQTT broker at {self.url}: {exc}")

    async def connect(self) -> None:
        """Connect the publishing client (clean session, random id)."""
        async with self._publisher_lock:
            await self._connect_publisher()

    async def _connect_publisher(self) -> aiomqtt.Client:
        client = self._client(f"p2phost-pub-{secrets.token_hex(8)}", clean=True)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc
        self._publisher = client
        return client

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        """Connect the inbox's client, subscribe with QoS 1, and start reading."""
        self._inbox = name
        if "-" not in name:
            limit = self._limit()
            _, _, self._taken = await self._look(name)
            self._taken_sent = self._taken
            await self._mark(name, marker(limit, self.retention.max_bytes))
            await self._mark(taken_topic(name), self._taken.payload(), topic=True)
        self._subscriber = await self._subscribe()
        self._reader = asyncio.get_running_loop().create_task(
            self._read(deliver), name=f"mqtt reader {name[:12]}")

    async def _subscribe(self) -> aiomqtt.Client:
        # A reply inbox lives as long as this process: its session need not outlive it.
        self._persistent = "-" not in self._inbox
        client = self._client(f"p2phost-{self._inbox}", clean=not self._persistent,
                              manual_ack=True)
        try:
            await client.__aenter__()
            await client.subscribe(inbox_topic(self._inbox), qos=1)
        except aiomqtt.MqttError as exc:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise self._error(exc) from exc
        return client

    async def _read(self, deliver: Deliver) -> None:
        failures = 0
        while True:
            client = self._subscriber
            try:
                if client is None:
                    client = self._subscriber = await self._subscribe()
                    log.info("reconnected to the MQTT broker at %s", self.url)
                failures = 0
                async for message in client.messages:
                    payload = message.payload
                    data = payload if isinstance(payload, bytes) else b""
                    await deliver(data, (client, message.mid, is_letter(data), len(data)))
                raise aiomqtt.MqttError("the broker closed the connection")
            except (aiomqtt.MqttError, MediumUnavailable) as exc:
                if failures == 0:
                    log.warning("lost the MQTT broker at %s (reconnecting): %s", self.url, exc)
                if client is not None:
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.__aexit__(None, None, None)
                self._subscriber = None
            stop_if_cancelled()
            await asyncio.sleep(backoff(failures))
            failures += 1

    def _limit(self) -> int:
        """This node's inbox limit: ``max-messages``, at most the broker's queue limit."""
        wanted, broker = self.retention.max_messages, self.broker_limit
        if broker and wanted > broker:
            raise MediumRefused(
                f"max-messages = {wanted} in [config.mqtt-transport] is above the MQTT "
                f"broker's queue limit (broker-queue-limit = {broker}): the broker at "
                f"{self.url} would drop what passes {broker} without telling anyone (fix: "
                "lower max-messages, or raise max_queued_messages in mosquitto.conf and set "
                "broker-queue-limit to the same value)")
        return wanted or broker

    async def _look(self, name: str) -> tuple[Limits, Count, Count]:
        try:
            return await self._watch.look(name)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc

    async def _mark(self, name: str, value: bytes, *, topic: bool = False) -> None:
        async with self._publisher_lock:
            client = self._publisher or await self._connect_publisher()
        try:
            await client.publish(name if topic else marker_topic(name), value, qos=1,
                                 retain=True)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc

    async def probe(self, name: str) -> bool | None:
        """Whether the inbox's retained marker is there (reply inboxes: cannot say)."""
        if "-" in name:
            return None
        try:
            async with self._client(f"p2phost-probe-{secrets.token_hex(8)}", clean=True) as client:
                await client.subscribe(marker_topic(name), qos=1)
                try:
                    async with asyncio.timeout(_PROBE_WAIT):
                        async for message in client.messages:
                            return bool(message.payload)
                except TimeoutError:
                    return False
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc
        return False

    async def create_inbox(self, name: str) -> None:
        """Start the inbox's persistent session (subscribed with QoS 1), as the node's
        first run would: the broker queues what is published before it runs."""
        try:
            async with self._client(f"p2phost-{name}", clean=False) as client:
                await client.subscribe(inbox_topic(name), qos=1)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc
        await self._mark(name, b"1")
        _, stored, _ = await self._look(name)  # it starts with what was stored before
        await self._mark(taken_topic(name), stored.payload(), topic=True)

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """Whether the marker is there, and the letters waiting as the counts say."""
        exists = await self.probe(name)
        _, stored, taken = await self._look(name)
        waiting = stored - taken
        return {"exists": exists, "records": waiting.n, "bytes": waiting.b}

    async def store(self, name: str, records: Sequence[bytes]) -> None:
        """Refused when the letters waiting in the inbox (as the retained counts say) and
        these would pass its limit, which the broker would silently enforce. A sender
        claims places :data:`_CLAIM` at a time: its retained count goes up before the
        records it covers are published (in the same round trip), and down to what it
        really stored when it closes (a sender killed meanwhile makes the inbox look
        fuller than it is by the rest of its claim)."""
        if "-" in name:  # a reply inbox: answers while its reader waits
            await self.append(name, records)
            return
        limits, stored, taken = await self._look(name)
        cap = min((x for x in (limits.messages, self.broker_limit) if x), default=0)
        mine = stored_topic(name, self._peer_id)
        seen = self._watch.count(mine)
        actual = self._stored.setdefault(name, seen)
        waiting = stored - seen + actual - taken
        size = sum(map(len, records))
        full = ""
        if cap and waiting.n + len(records) > cap:
            full = f"max-messages = {cap} waiting records, {waiting.n} now"
        elif limits.bytes and waiting.b + size > limits.bytes:
            full = f"max-bytes = {limits.bytes} bytes, {waiting.b} now"
        if full:
            raise InboxFull(
                f"the inbox of {name} on {self.url} is full ({full}): nothing was stored "
                "(the MQTT broker would drop what passes it); it empties as that node runs")
        actual = self._stored[name] = actual + Count(len(records), size)
        claim = self._claims.get(name, 0)
        if actual.n <= claim:
            await self.append(name, records)
            return
        # Places are claimed ahead only where the count alone is limited: bytes are
        # known once stored, so under max-bytes each store writes its count.
        batch = 1 if limits.bytes else _CLAIM
        room = cap - waiting.n - len(records) if cap else batch
        claim = self._claims[name] = actual.n + max(0, min(batch - 1, room))
        shown = Count(claim, actual.b)
        self._watch.note(mine, shown)
        # Both in flight at once, the count's packet first (each publish hands its packet
        # to the client before its first wait): one round trip.
        await asyncio.gather(self._mark(mine, shown.payload(), topic=True),
                             self.append(name, records))

    async def _settle_claims(self) -> None:
        # What this sender really stored, in place of its claims.
        for name, claim in self._claims.items():
            if claim > self._stored[name].n:
                await self._mark(stored_topic(name, self._peer_id),
                                 self._stored[name].payload(), topic=True)
        self._claims.clear()

    async def delete_inbox(self, name: str) -> bool:
        """Drop the session (and what it queued) and the marker."""
        existed = await self.probe(name)
        await self._look(name)
        for topic in [*self._watch.senders(name), taken_topic(name)]:
            await self._mark(topic, b"", topic=True)
        await self._mark(name, b"")
        try:
            async with self._client(f"p2phost-{name}", clean=True):
                pass
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc
        return bool(existed)

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        """Publish with QoS 1, in order, and wait for every PUBACK."""
        async with self._publisher_lock:
            client = self._publisher or await self._connect_publisher()
        topic = inbox_topic(name)
        # Each publish hands its packet to paho before its first await, so starting them
        # in order sends them in order.
        results = await asyncio.gather(
            *(client.publish(topic, record, qos=1) for record in records),
            return_exceptions=True)
        stop_if_cancelled()
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if isinstance(failure, aiomqtt.MqttError):
            exc = failure
            async with self._publisher_lock:
                if self._publisher is client:
                    self._publisher = None
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise self._error(exc) from exc
        if failure is not None:
            raise failure

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """PUBACK the messages (those of a lost connection come again: skip them)."""
        current = self._subscriber
        for client, mid, letter, size in tokens:
            if current is not None and client is current:
                current._client.ack(mid, 1)
                if letter:
                    self._taken += Count(1, size)
        if self._taken != self._taken_sent:
            wait = self._taken_at + _TAKEN_EVERY - time.monotonic()
            if wait <= 0:
                await self._send_taken()
            elif self._taken_later is None or self._taken_later.done():
                # The last letters of a burst are counted too, once the node is idle.
                self._taken_later = asyncio.get_running_loop().create_task(
                    self._send_taken_later(wait), name="mqtt taken count")

    async def _send_taken_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        if self._taken != self._taken_sent:
            with contextlib.suppress(MediumUnavailable, MediumRefused):
                await self._send_taken()

    async def _send_taken(self) -> None:
        # Senders count what waits from it: behind by at most the last few letters (they
        # then refuse a little early, never late).
        self._taken_at, self._taken_sent = time.monotonic(), self._taken
        await self._mark(taken_topic(self._inbox), self._taken.payload(), topic=True)

    async def close(self, *, delete_inbox: bool) -> None:
        """Stop reading; forget a deleted inbox's session; disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._watch.close()
        if self._taken_later is not None:
            self._taken_later.cancel()
            await asyncio.gather(self._taken_later, return_exceptions=True)
        with contextlib.suppress(MediumUnavailable, MediumRefused):
            await self._settle_claims()
            if self._taken != self._taken_sent and not delete_inbox:
                await self._send_taken()
        for client in (self._subscriber, self._publisher):
            if client is not None:
                with contextlib.suppress(aiomqtt.MqttError):
                    if client is self._subscriber and delete_inbox:
                        await client.unsubscribe(inbox_topic(self._inbox))
                    await client.__aexit__(None, None, None)
        self._subscriber = self._publisher = None
        if delete_inbox and self._persistent and self._inbox:
            with contextlib.suppress(MediumUnavailable, MediumRefused):
                await self._mark(self._inbox, b"")
            # Connecting once with a clean session makes the broker drop the old one.
            with contextlib.suppress(aiomqtt.MqttError):
                async with self._client(f"p2phost-{self._inbox}", clean=True):
                    pass


class MqttTransport(InboxTransport):
    """``mqtt://HOST:PORT``: node inboxes as MQTT topics (QoS 1, persistent sessions)."""

    schemes = ("mqtt",)
    default_port = 1883
    address_example = "mqtt://HOST:PORT"

    def __init__(self, *, broker_limit: int = BROKER_QUEUE_LIMIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broker_limit = broker_limit

    def make_medium(self, address: MediumAddress) -> Medium:
        """An MQTT medium for ``address``."""
        return MqttMedium(address, peer_id=self.peer_id, broker_limit=self.broker_limit)
