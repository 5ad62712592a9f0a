"""The bridge app: one pump task per in mapping, one handler per out topic.

In (broker -> p2phost): a pump reads its broker's messages one at a time (the broker
holds the rest back: prefetch, pending limits), decodes each with the mapping's codec and
publishes it on the topic (or sends it to the mapping's ``peers``); only then does it
acknowledge the message to the broker. On an acknowledged mapping the topic is
at-least-once, so "the node has it" means it is committed to the node's outbox; while no
peer takes the topic the pump waits (backing off) and acknowledges nothing. A payload that
does not decode goes to the node's dead-letter store, then is acknowledged.

Out (p2phost -> broker): the topic's handler encodes the body and publishes it; on an
acknowledged mapping the topic is at-least-once and the handler returns (so the node
acknowledges the message) only once the broker confirmed; a failure is raised, so the
node retries, then dead-letters it.

Loops: what the bridge publishes on a broker carries a marker (see :mod:`._endpoint`)
and is never bridged in; on the p2phost side the bridge tells its peers what it bridges
in (a topic ``broker-bridge/in/TOPIC/ORIGIN`` in its hello, ORIGIN a digest of the
external name), and a bridge never bridges a message on TOPIC from such a peer out to
that same external name. (To another name it does: a NATS subject can feed an MQTT topic
through two bridges.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any

from p2phost_sdk import (
    App,
    Backoff,
    CodecError,
    Delivery,
    DeliveryMode,
    FrameTooLarge,
    Handler,
    Message,
    Messenger,
    P2PHostError,
    TaskOwner,
    close_within,
    with_timeout,
)

from ._endpoint import EchoFilter, Endpoint, Incoming, make_endpoint
from ._errors import PLUGIN
from ._settings import HEADERLESS, BridgeMapping, BridgeSettings

log = logging.getLogger("p2phost.plugin.broker-bridge")
#: The prefix of the topics that say which topics a node bridges in (origin tracking).
INJECTS = "broker-bridge/in/"
#: A request here answers with the bridge's mappings and counters.
STATUS_TOPIC = "broker-bridge/status"
_STOP_BOUND = 4.0


@dataclass
class BridgeCounts:
    """What the bridge did since it started."""

    #: Broker messages published (or sent) on p2phost topics.
    bridged_in: int = 0
    #: p2phost messages published on brokers.
    bridged_out: int = 0
    #: Messages not bridged because they were bridged already (marker, echo or origin).
    looped: int = 0
    #: Foreign payloads that did not decode, put in the dead-letter store.
    dead_lettered: int = 0
    #: At-most-once messages nobody took, or that the broker refused.
    dropped: int = 0


class BridgeApp(App):
    """Mirrors p2phost topics to and from names on brokers, as ``[config.broker-bridge]``
    maps them."""

    name = "broker-bridge"

    def __init__(self, settings: BridgeSettings, *, peer_id: str) -> None:
        self.settings = settings
        self.peer_id = peer_id
        self.counts = BridgeCounts()
        self._tasks = TaskOwner(PLUGIN, logger=log)
        self._backoff = Backoff(0.2, 5.0)
        echoes: dict[tuple[str, str, str], EchoFilter] = {}
        self._endpoints: list[tuple[BridgeMapping, Endpoint]] = []
        self._out: dict[str, list[tuple[BridgeMapping, Endpoint]]] = {}
        for m in settings.mappings:
            # Out and in mappings of one headerless name share the filter of our echoes.
            echo = echoes.setdefault((m.broker, m.kind, m.name), EchoFilter())
            endpoint = make_endpoint(m, peer_id, timeout=settings.timeout,
                                     queue=settings.queue, echo=echo)
            self._endpoints.append((m, endpoint))
            if m.direction == "out":
                self._out.setdefault(m.topic, []).append((m, endpoint))
        self._opened: set[int] = set()
        self._locks: dict[int, asyncio.Lock] = {}

    # -- what the node sees ---------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        """A handler per out topic, a marker topic per in topic, and the status."""
        found: dict[str, Handler] = {t: functools.partial(self._forward, t) for t in self._out}
        found[STATUS_TOPIC] = self._status
        for m in self.settings.mappings:
            if m.direction == "in":
                found[f"{INJECTS}{m.topic}/{m.origin}"] = self._marker
        return found

    def deliveries(self) -> dict[str, Delivery]:
        """At-least-once for the topics of acknowledged mappings."""
        return {m.topic: Delivery(DeliveryMode.AT_LEAST_ONCE)
                for m in self.settings.mappings if m.acknowledged}

    async def start(self, node: Messenger) -> None:
        """Start a pump per in mapping (each connects, and reconnects, by itself)."""
        self.node = node
        if not self._endpoints:
            log.warning("%s has no mappings: add [config.%s.mappings.NAME] tables to "
                        "p2phost.toml (docs/bridges.md)", PLUGIN, PLUGIN)
        for m, endpoint in self._endpoints:
            if m.direction == "in":
                self._tasks.spawn(self._pump(m, endpoint), f"{PLUGIN} {m.key}")
            if (m.family, m.kind) in HEADERLESS:
                log.debug("%s has no headers: loops are told by our recent payloads", m.where)

    async def stop(self) -> None:
        """Stop the pumps and disconnect (what was not acknowledged, brokers redeliver)."""
        # Within the node's bound on stopping an app: a client library that does not end
        # a blocking read when cancelled (redis-py, at times) is left behind and logged.
        bound = min(self.settings.timeout, _STOP_BOUND)
        await self._tasks.close(bound)
        await asyncio.gather(*(close_within(endpoint.close(), bound, plugin=PLUGIN,
                                            doing=f"closing {m.where}", logger=log)
                               for m, endpoint in self._endpoints))
        c = self.counts
        log.info("%s: %d bridged in, %d bridged out, %d loops stopped, %d dead-lettered, "
                 "%d dropped", PLUGIN, c.bridged_in, c.bridged_out, c.looped,
                 c.dead_lettered, c.dropped)

    async def _status(self, message: Message) -> Any:
        """``p2phost send ADDR broker-bridge/status null --request``: mappings, counters."""
        return {"mappings": [{"name": m.key, "direction": m.direction, "external": m.where,
                              "topic": m.topic, "codec": m.codec.name,
                              "acknowledged": m.acknowledged}
                             for m in self.settings.mappings],
                "counts": dataclasses.asdict(self.counts)}

    async def _marker(self, message: Message) -> Any:
        raise ValueError(f"{message.topic} only says what this node bridges in; it takes "
                         "no messages")

    # -- in: broker -> p2phost --------------------------------------------------------

    async def _pump(self, m: BridgeMapping, endpoint: Endpoint) -> None:
        failures = 0
        while True:
            try:
                await self._open(m, endpoint)
                log.info("%s: bridging %s -> topic %r (%s)", PLUGIN, m.where, m.topic,
                         "acknowledged" if m.acknowledged else "at most once")
                async for item in endpoint.receive():
                    failures = 0
                    await self._inject(m, item)
                    if item.ack is not None:
                        await with_timeout(item.ack(), self.settings.timeout, plugin=PLUGIN,
                                           doing=f"acknowledging a message of {m.where}")
            except Exception as exc:  # any client library's failure: reconnect
                if failures == 0:
                    log.warning("%s: lost %s (reconnecting): %s: %s", PLUGIN, m.where,
                                type(exc).__name__, exc)
            self._opened.discard(id(endpoint))
            await close_within(endpoint.close(), self.settings.timeout, plugin=PLUGIN,
                               doing=f"closing {m.where}", logger=log)
            await asyncio.sleep(self._backoff.delay(failures))
            failures += 1

    async def _inject(self, m: BridgeMapping, item: Incoming) -> None:
        if item.marked:
            self.counts.looped += 1
            return
        try:
            body = m.codec.decode(item.payload)
        except CodecError as exc:
            await self._bury(m, item, f"a payload from outside does not decode: {exc}")
            return
        attempt = 0
        while True:
            try:
                taken = await self._deliver(m, body)
            except (CodecError, FrameTooLarge) as exc:  # never deliverable: no retry
                await self._bury(m, item, f"the node cannot carry it: {exc}")
                return
            if taken or not m.acknowledged:
                break
            if attempt == 0:
                log.warning("%s: no peer takes topic %r yet; holding the messages of %s "
                            "(acknowledged: nothing is lost)", PLUGIN, m.topic, m.where)
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1
        if taken:
            self.counts.bridged_in += 1
        else:
            self.counts.dropped += 1

    async def _bury(self, m: BridgeMapping, item: Incoming, reason: str) -> None:
        await with_timeout(
            self.node.dead_letter(m.topic, item.payload, source=m.where, reason=reason,
                                  content_type=m.codec.content_type),
            self.settings.timeout, plugin=PLUGIN, doing="storing a dead letter")
        self.counts.dead_lettered += 1

    async def _deliver(self, m: BridgeMapping, body: Any) -> int:
        """How many peers took ``body`` (on an acknowledged mapping: durably)."""
        doing = f"handing a message of {m.where} to topic {m.topic!r}"
        try:
            if not m.peers:
                return await with_timeout(self.node.publish(m.topic, body),
                                          self.settings.timeout, plugin=PLUGIN, doing=doing)
            for peer in m.peers:
                await with_timeout(self.node.send(peer, m.topic, body), self.settings.timeout,
                                   plugin=PLUGIN, doing=doing)
            return len(m.peers)
        except (CodecError, FrameTooLarge):
            raise
        except P2PHostError as exc:
            log.debug("%s: %s: %s", PLUGIN, doing, exc)
            return 0

    # -- out: p2phost -> broker -------------------------------------------------------

    async def _forward(self, topic: str, message: Message) -> None:
        brought = self._brought_in_by(message.sender)
        for m, endpoint in self._out[topic]:
            if f"{INJECTS}{topic}/{m.origin}" in brought:
                self.counts.looped += 1
                continue
            payload = m.codec.encode(message.body)  # CodecError: retried, then dead-lettered
            try:
                await with_timeout(self._publish(m, endpoint, payload), self.settings.timeout,
                                   plugin=PLUGIN, doing=f"publishing to {m.where}")
            except Exception as exc:
                self._opened.discard(id(endpoint))
                await close_within(endpoint.close(), self.settings.timeout, plugin=PLUGIN,
                                   logger=log)
                if m.acknowledged or isinstance(exc, CodecError):
                    raise
                self.counts.dropped += 1
                log.warning("%s: dropped a message for %s: %s: %s", PLUGIN, m.where,
                            type(exc).__name__, exc)
                continue
            self.counts.bridged_out += 1

    async def _publish(self, m: BridgeMapping, endpoint: Endpoint, payload: bytes) -> None:
        if id(endpoint) not in self._opened:
            await self._open(m, endpoint)
        await endpoint.publish(payload)

    async def _open(self, m: BridgeMapping, endpoint: Endpoint) -> None:
        lock = self._locks.setdefault(id(endpoint), asyncio.Lock())
        async with lock:
            if id(endpoint) not in self._opened:
                await with_timeout(endpoint.open(), self.settings.timeout, plugin=PLUGIN,
                                   doing=f"connecting to {m.where}")
                self._opened.add(id(endpoint))

    def _brought_in_by(self, sender: str) -> frozenset[str]:
        """The marker topics of what ``sender`` bridges in (none: not a bridge)."""
        for peer in self.node.peers():
            if peer.peer_id == sender:
                return frozenset(t for t in peer.topics if t.startswith(INJECTS))
        return frozenset()
