"""What the bridge needs from a broker: publish a payload, and receive payloads with a way
to acknowledge each; and how it tells its own messages when they come back.

Loops: everything the bridge publishes carries the header :data:`MARKER` (its peer id)
where the medium has headers (NATS, MQTT 5 user properties, AMQP headers, a Redis stream
field); a marked message is never bridged in. Redis channels and PostgreSQL NOTIFY have
no headers, so an :class:`EchoFilter` remembers digests of what was published there for
a while and drops the echo once.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ._settings import BridgeMapping

#: The header (or property, or stream field) on every message the bridge publishes.
MARKER = "p2phost-bridge"


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message from the broker."""

    payload: bytes
    #: It carries :data:`MARKER` (or is the echo of our own publish): never bridged in.
    marked: bool
    #: Acknowledges it to the broker (None: nothing to acknowledge).
    ack: Callable[[], Awaitable[object]] | None = None


class EchoFilter:
    """Digests of payloads published on one headerless name, each dropped once when it
    comes back within ``ttl`` seconds; at most ``limit`` are kept (oldest forgotten)."""

    def __init__(self, ttl: float = 60.0, limit: int = 10_000) -> None:
        self.ttl, self.limit = ttl, limit
        self._sent: OrderedDict[bytes, tuple[int, float]] = OrderedDict()

    def remember(self, payload: bytes) -> None:
        """``payload`` was just published."""
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        count, _ = self._sent.pop(digest, (0, 0.0))
        self._sent[digest] = (count + 1, time.monotonic() + self.ttl)
        while len(self._sent) > self.limit:
            self._sent.popitem(last=False)

    def echo(self, payload: bytes) -> bool:
        """Whether ``payload`` is the echo of one of our publishes (counted off once)."""
        now = time.monotonic()
        while self._sent:
            oldest = next(iter(self._sent))
            if self._sent[oldest][1] > now:
                break
            del self._sent[oldest]
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        found = self._sent.get(digest)
        if found is None:
            return False
        count, until = found
        if count > 1:
            self._sent[digest] = (count - 1, until)
        else:
            del self._sent[digest]
        return True


class Endpoint(abc.ABC):
    """One mapping's link to its broker (one connection, opened and closed by the app)."""

    def __init__(self, mapping: BridgeMapping, peer_id: str, *, timeout: float, queue: int,
                 echo: EchoFilter) -> None:
        self.mapping, self.peer_id = mapping, peer_id
        self.timeout, self.queue, self.echo = timeout, queue, echo

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (and, for an in mapping, subscribe); BrokerUnavailable when it cannot."""

    @abc.abstractmethod
    async def publish(self, payload: bytes) -> None:
        """Publish ``payload`` with the marker; returns once the broker has it (for an
        acknowledged mapping: confirmed, where the medium confirms)."""

    @abc.abstractmethod
    def receive(self) -> AsyncIterator[Incoming]:
        """The messages, as they come (the broker holds more back: bounded)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; what was not acknowledged the broker redelivers."""


def make_endpoint(mapping: BridgeMapping, peer_id: str, *, timeout: float, queue: int,
                  echo: EchoFilter) -> Endpoint:
    """The endpoint for ``mapping``'s broker (its client library is imported here)."""
    if mapping.family == "nats":
        from ._nats import NatsEndpoint as cls
    elif mapping.family == "mqtt":
        from ._mqtt import MqttEndpoint as cls  # type: ignore[assignment]
    elif mapping.family == "redis":
        from ._redis import RedisEndpoint as cls  # type: ignore[assignment]
    elif mapping.family == "amqp":
        from ._amqp import AmqpEndpoint as cls  # type: ignore[assignment]
    else:
        from ._postgres import PostgresEndpoint as cls  # type: ignore[assignment]
    return cls(mapping, peer_id, timeout=timeout, queue=queue, echo=echo)
