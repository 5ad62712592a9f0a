"""``[config.broker-bridge]``: the mappings, read and checked once, with a fix for each mistake.

::

    [config.broker-bridge.mappings.orders-in]
    direction = "in"                     # in: broker -> p2phost topic; out: topic -> broker
    broker = "nats://127.0.0.1:4222"     # nats:// mqtt:// redis:// amqp:// postgresql://
    kind = "jetstream"                   # nats: subject | jetstream; redis: channel | stream
    name = "shop.orders"                 # subject, MQTT topic, channel, stream key, routing key
    topic = "orders"                     # the p2phost topic
    codec = "json"                       # json | msgpack | text | raw
    acknowledged = true                  # ack each side only once the other side has it
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._codecs import CODECS, ExternalCodec
from ._errors import PLUGIN, MappingError

#: URL scheme -> (broker family, its kinds; the first is the default).
SCHEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "nats": ("nats", ("subject", "jetstream")),
    "tls": ("nats", ("subject", "jetstream")),
    "mqtt": ("mqtt", ("topic",)),
    "redis": ("redis", ("channel", "stream")),
    "rediss": ("redis", ("channel", "stream")),
    "amqp": ("amqp", ("exchange",)),
    "amqps": ("amqp", ("exchange",)),
    "postgresql": ("postgres", ("channel",)),
    "postgres": ("postgres", ("channel",)),
}
#: The kinds whose messages a consumer acknowledges (the broker keeps them until then).
ACKNOWLEDGING = {("nats", "jetstream"), ("redis", "stream"), ("amqp", "exchange"),
                 ("mqtt", "topic")}
#: Kinds with no message headers: loops are told by the bridge's own recent payloads.
HEADERLESS = {("redis", "channel"), ("postgres", "channel")}
_KEYS = ("direction", "broker", "kind", "name", "topic", "codec", "acknowledged", "stream",
         "exchange", "exchange-type", "peers", "field", "redeliver-after")
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class BridgeMapping:
    """One mapping between a p2phost topic and a name on a broker."""

    key: str
    direction: str
    broker: str
    family: str
    kind: str
    name: str
    topic: str
    codec: ExternalCodec
    acknowledged: bool
    stream: str = ""
    exchange: str = "amq.topic"
    exchange_type: str = "topic"
    peers: tuple[str, ...] = ()
    field: str = "data"
    redeliver_after: float = 10.0

    @property
    def where(self) -> str:
        """The external side for people (the broker's URL without its password)."""
        parts = urlsplit(self.broker)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        public = urlunsplit(parts._replace(netloc=host, query="", fragment=""))
        return f"{self.kind} {self.name!r} on {public}"

    @property
    def origin(self) -> str:
        """A short digest of the external name (broker, kind, exchange, name): the same
        for an in and an out mapping of one name, whichever node holds them."""
        parts = urlsplit(self.broker)
        where = f"{self.family}|{parts.hostname}:{parts.port}{parts.path.rstrip('/')}|" \
                f"{self.kind}|{self.exchange if self.family == 'amqp' else ''}|{self.name}"
        return hashlib.blake2b(where.encode(), digest_size=5).hexdigest()

    def durable_name(self, peer_id: str) -> str:
        """The broker-side name of this mapping's consumer (JetStream durable, Redis
        group, AMQP queue, MQTT client id): the same across restarts of this node."""
        return f"p2phost-bridge-{peer_id[:16]}-{_SAFE.sub('_', self.key)}"


@dataclass(frozen=True)
class BridgeSettings:
    """The whole ``[config.broker-bridge]`` table."""

    mappings: tuple[BridgeMapping, ...]
    timeout: float = 10.0
    queue: int = 256

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BridgeSettings:
        """The settings of a validated config table; MappingError names the first mistake."""
        timeout, queue = config.get("timeout", 10.0), config.get("queue", 256)
        if not timeout > 0:
            raise MappingError("timeout", "seconds > 0", timeout, "set timeout = 10.0")
        if not 1 <= queue <= 100_000:
            raise MappingError("queue", "a whole number from 1 to 100000", queue,
                               "set queue = 256")
        table = config.get("mappings") or {}
        mappings = tuple(_mapping(str(k), v) for k, v in table.items())
        return cls(mappings, float(timeout), int(queue))


def _mapping(key: str, entry: Any) -> BridgeMapping:
    at = f"mappings.{key}"
    table = f"[config.{PLUGIN}.{at}]"
    if not isinstance(entry, Mapping):
        raise MappingError(at, "a table", entry,
                           f"write it as [config.{PLUGIN}.mappings.{key}] with direction, "
                           "broker, name and topic")
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise MappingError(f"{at}.{unknown[0]}", "one of " + ", ".join(_KEYS), unknown[0],
                           f"remove {unknown[0]} from {table}")
    for required in ("direction", "broker", "name", "topic"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise MappingError(f"{at}.{required}", "a non-empty string", entry.get(required),
                               f'add {required} = "..." to {table} '
                               "(docs/bridges.md has an example per broker)")
    direction = entry["direction"]
    if direction not in ("in", "out"):
        raise MappingError(f"{at}.direction", '"in" (broker -> topic) or "out" '
                           "(topic -> broker)", direction, f'set direction = "in" in {table}')
    scheme = urlsplit(entry["broker"]).scheme
    if scheme not in SCHEMES:
        raise MappingError(f"{at}.broker", "a URL nats://, mqtt://, redis://, amqp:// or "
                           "postgresql://", entry["broker"],
                           'set broker = "nats://127.0.0.1:4222" (or the URL of your broker)')
    family, kinds = SCHEMES[scheme]
    kind = entry.get("kind", kinds[0])
    if kind not in kinds:
        raise MappingError(f"{at}.kind", f"for {scheme}:// one of {', '.join(kinds)}", kind,
                           f'set kind = "{kinds[0]}" or remove it')
    codec_name = entry.get("codec", "json")
    if codec_name not in CODECS:
        raise MappingError(f"{at}.codec", "one of " + ", ".join(CODECS), codec_name,
                           'set codec = "json" (or msgpack, text, raw)')
    acknowledged = entry.get("acknowledged", False)
    if not isinstance(acknowledged, bool):
        raise MappingError(f"{at}.acknowledged", "true or false", acknowledged,
                           "set acknowledged = true")
    if acknowledged and direction == "in" and (family, kind) not in ACKNOWLEDGING:
        better = {"nats": 'kind = "jetstream"', "redis": 'kind = "stream"'}.get(
            family, "acknowledged = false (PostgreSQL NOTIFY keeps nothing for a consumer)")
        raise MappingError(f"{at}.acknowledged", f"false: {kind} {entry['name']!r} cannot "
                           "be acknowledged by a consumer", True, f"set {better} in {table}")
    stream = entry.get("stream", "")
    if family == "nats" and kind == "jetstream" and not stream:
        raise MappingError(f"{at}.stream", "the JetStream stream holding the subject", None,
                           f'add stream = "{_SAFE.sub("_", key).upper()}" to {table} (created '
                           "over the subject when missing)")
    peers = entry.get("peers", [])
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers) \
            or (peers and direction == "out"):
        raise MappingError(f"{at}.peers", "for direction in, a list of peer ids or "
                           "addresses", peers, f"remove peers from {table} to publish to every "
                           "peer handling the topic")
    redeliver = entry.get("redeliver-after", 10.0)
    if isinstance(redeliver, bool) or not isinstance(redeliver, int | float) or redeliver <= 0:
        raise MappingError(f"{at}.redeliver-after", "seconds > 0", redeliver,
                           "set redeliver-after = 10.0")
    for text in ("exchange", "exchange-type", "field", "stream"):
        if text in entry and not isinstance(entry[text], str):
            raise MappingError(f"{at}.{text}", "a string", entry[text],
                               f'set {text} = "..." in {table}')
    return BridgeMapping(
        key=key, direction=direction, broker=entry["broker"], family=family, kind=kind,
        name=entry["name"], topic=entry["topic"], codec=CODECS[codec_name],
        acknowledged=acknowledged, stream=stream,
        exchange=entry.get("exchange", "amq.topic"),
        exchange_type=entry.get("exchange-type", "topic"), peers=tuple(peers),
        field=entry.get("field", "data"), redeliver_after=float(redeliver))
