"""MQTT as an inbox medium (Mosquitto or any MQTT 5 broker), through aiomqtt.

Each node's inbox is the topic ``p2phost/inbox/NAME``, read with QoS 1 by a client
whose id is ``p2phost-NAME``. A listening node keeps a persistent session (no clean
start, a session that never expires): the broker holds its messages while it is away and
resends those it never acknowledged. While the node runs, the broker hands it all it
holds without waiting for acknowledgements (``_READ_AHEAD``): nothing of a running
node's waits in the broker's bounded queue. Acknowledgements are manual (paho-mqtt 2's
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
import math
import secrets
import time
from collections.abc import Hashable, Sequence
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from p2phost_sdk import AddressError
from p2phost_sdk.inbox import (
    Deliver,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumRefused,
    MediumUnavailable,
    backoff,
    stop_if_cancelled,
)

from ._counts import Watch, is_letter, marker, marker_topic, taken_topic
from ._stores import CountedMedium, inbox_topic
from ._tally import Count, Inbox, Tally

log = logging.getLogger("p2phost.transport.mqtt")
# paho and aiomqtt report every lost socket as an error, and every forced disconnect as
# a warning; this module reports a lost broker once, as a warning, and reconnects.
_client_log = logging.getLogger("p2phost.transport.mqtt.client")
_client_log.setLevel(logging.CRITICAL)
_MAX_PACKET = 268_435_455  # the largest MQTT packet
_REFUSED_CODES = {4, 5}  # CONNACK: bad user name or password; not authorised


_PROBE_WAIT = 0.5
#: The inbox reader's MQTT 5 Receive Maximum: the most the broker hands it unacknowledged
#: at once (the protocol's largest). A 3.1.1 reader gets the broker's 20 (Mosquitto's
#: max_inflight_messages) and the rest waits in the session's queue, which the broker
#: cuts at max_queued_messages past those 20 *while the node reads* too: a few
#: connections' windows (256 frames each) of a node busy with the first 20 passed it,
#: and the frames dropped left their connections waiting for them for ever.
_READ_AHEAD = 65_535
_NEVER_EXPIRES = 0xFFFF_FFFF  # a session expiry interval: the session stays (MQTT 5)
#: Mosquitto's default ``max_queued_messages``.
BROKER_QUEUE_LIMIT = 1000


class MqttMedium(CountedMedium):
    """One node's link to one MQTT broker."""

    max_record_size = _MAX_PACKET - 1024  # room for the topic and the packet header

    def __init__(self, address: MediumAddress, *, peer_id: str = "",
                 broker_limit: int = BROKER_QUEUE_LIMIT) -> None:
        if address.parts.path not in ("", "/") or address.parts.query:
            raise AddressError(address.public, "expected mqtt://HOST:PORT (no path or query)",
                               expected="mqtt://HOST:PORT")
        self.url = address.public
        self._host = address.parts.hostname or ""
        self._port = address.parts.port or 1883
        self._user = address.parts.username
        self._password = address.parts.password
        self._publisher: aiomqtt.Client | None = None
        self._publisher_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._subscriber: aiomqtt.Client | None = None
        super().__init__(peer_id, broker_limit)
        self._watch = Watch(lambda: self._client(f"p2phost-watch-{secrets.token_hex(8)}",
                                                 clean=True))

    def _client(self, identifier: str, *, clean: bool, manual_ack: bool = False,
                v5: bool = False, reader: bool = False) -> aiomqtt.Client:
        # The publisher speaks MQTT 5 for the Message Expiry Interval; the inbox's reader
        # for its Receive Maximum (_READ_AHEAD), its session kept as 3.1.1 would keep it
        # (a persistent one never expires, a clean one ends with the connection).
        extra: dict[str, Any] = {}
        if reader:
            v5 = True
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = _READ_AHEAD
            if not clean:
                properties.SessionExpiryInterval = _NEVER_EXPIRES
            extra = {"clean_start": clean, "properties": properties}
        client = aiomqtt.Client(self._host, self._port, username=self._user,
                                password=self._password, identifier=identifier,
                                clean_session=None if v5 else clean, keepalive=15,
                                timeout=10.0, logger=_client_log,
                                protocol=aiomqtt.ProtocolVersion.V5 if v5 else None, **extra)
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
        client = self._client(f"p2phost-pub-{secrets.token_hex(8)}", clean=True, v5=True)
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
            limit, retention = self._limit(), self.retention
            self._taken = (await self._look(name)).taken
            self._taken_sent = self._taken.payload()
            await self._mark(name, marker(limit, retention.max_bytes, retention.max_age))
            await self._mark(taken_topic(name), self._taken_sent, topic=True)
        self._subscriber = await self._subscribe()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(deliver), name=f"mqtt reader {name[:12]}")
        if self._persistent and self.retention.max_age:
            self._marks = loop.create_task(self._mark_reading(), name="mqtt marks")

    async def _subscribe(self) -> aiomqtt.Client:
        # A reply inbox lives as long as this process: its session need not outlive it.
        self._persistent = "-" not in self._inbox
        client = self._client(f"p2phost-{self._inbox}", clean=not self._persistent,
                              manual_ack=True, reader=True)
        try:
            await client.__aenter__()
            if self._persistent:
                # Letters with an expiry come on subtopics (their bucket): the whole
                # tree, and not the bare topic as well (a message would come twice).
                await client.subscribe(f"{inbox_topic(self._inbox)}/#", qos=1)
                await client.unsubscribe(inbox_topic(self._inbox))
            else:
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
                    kind, _, bucket = str(message.topic).rpartition("/")
                    if kind.endswith("/mark"):  # how far this node has read
                        client._client.ack(message.mid, 1)
                        self._taken.passed = max(self._taken.passed, _int(bucket))
                        self._taken_changed()
                        continue
                    expiry = _int(bucket) if kind.endswith("/x") else None
                    await deliver(data, (client, message.mid, is_letter(data), len(data),
                                         expiry))
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

    async def _look(self, name: str) -> Inbox:
        try:
            return await self._watch.look(name)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc

    async def _mark(self, name: str, value: bytes, *, topic: bool = False,
                    retain: bool = True) -> None:
        async with self._publisher_lock:
            client = self._publisher or await self._connect_publisher()
        try:
            await client.publish(name if topic else marker_topic(name), value, qos=1,
                                 retain=retain)
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
                await client.subscribe(f"{inbox_topic(name)}/#", qos=1)
        except aiomqtt.MqttError as exc:
            raise self._error(exc) from exc
        await self._mark(name, b"1")
        taken = Tally()  # it starts with what was stored before (the broker dropped it)
        for stored in (await self._look(name)).stored:
            taken.merge(stored)
        await self._mark(taken_topic(name), taken.payload(), topic=True)

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """Whether the marker is there, and the letters waiting and expired unread as
        the counts say."""
        exists = await self.probe(name)
        inbox, now = await self._look(name), time.time()
        waiting = inbox.waiting(now)
        return {"exists": exists, "records": waiting.n, "bytes": waiting.b,
                "expired": inbox.expired(now).n}

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
        await self._publish(name, records)

    async def _publish(self, name: str, records: Sequence[bytes], bucket: int | None = None,
                       max_age: float = 0.0) -> None:
        async with self._publisher_lock:
            client = self._publisher or await self._connect_publisher()
        topic, properties = inbox_topic(name), None
        if bucket is not None:
            # The broker drops it unread after max-age (MQTT 5's Message Expiry
            # Interval); its topic tells the node its bucket.
            topic = f"{topic}/x/{bucket}"
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, math.ceil(max_age))
        # Each publish hands its packet to paho before its first await, so starting them
        # in order sends them in order.
        results = await asyncio.gather(
            *(client.publish(topic, record, qos=1, properties=properties)
              for record in records),
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

    def record_of(self, token: Any) -> Hashable | None:
        """A message's packet id: the broker sends a message it redelivers (after a
        reconnect, in the persistent session) with its id, and gives no other one that
        id while it waits for the PUBACK. A reply inbox's session is clean: after a
        reconnect the broker numbers its packets afresh, and a new message may bear the
        id of one held from the lost connection, so there the id counts with its
        connection (the client: alive while a token holds it, so its ``id`` is unique)."""
        if self._persistent:
            return int(token[1])
        return (id(token[0]), int(token[1]))

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """PUBACK the messages (those of a lost connection come again: skip them)."""
        current = self._subscriber
        for client, mid, letter, size, expiry in tokens:
            if current is not None and client is current:
                current._client.ack(mid, 1)
                if letter:
                    self._taken.add(Count(1, size), expiry)
        self._taken_changed()

    async def close(self, *, delete_inbox: bool) -> None:
        """Stop reading; forget a deleted inbox's session; disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._watch.close()
        for task in (self._taken_later, self._marks):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._marks = None
        with contextlib.suppress(MediumUnavailable, MediumRefused):
            await self._settle_claims()
            if self._inbox and self._persistent and not delete_inbox:
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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


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
