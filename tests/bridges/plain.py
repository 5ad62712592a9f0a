"""Plain broker clients (nats-py, aiomqtt, redis-py, aio-pika, psycopg), as the services
around a p2phost network use them: publish a payload on a name, collect what a name
carries (with whether it bears the bridge's marker)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import service_or_skip

MARKER = "p2phost-bridge"


@dataclass(frozen=True)
class Broker:
    """A broker kind a mapping can name, and where its service runs."""

    key: str
    url: str
    kind: str
    service: tuple[str, int]
    #: Whether an in mapping can be acknowledged here.
    acknowledged: bool

    def mapping(self, direction: str, name: str, topic: str, **extra: Any) -> dict[str, Any]:
        """A mapping table for ``[config.broker-bridge.mappings.*]``."""
        table = {"direction": direction, "broker": self.url, "kind": self.kind, "name": name,
                 "topic": topic, "acknowledged": self.acknowledged}
        if self.key == "jetstream":
            table["stream"] = "S" + name.replace(".", "_").replace("-", "_")
        if self.key == "amqp":
            table["exchange"] = "x-" + name
        return {**table, **extra}

    def unique_name(self) -> str:
        """A fresh external name (a uuid in it)."""
        return f"bridge-{uuid.uuid4().hex[:12]}" if self.key not in ("nats", "jetstream") \
            else f"bridge.{uuid.uuid4().hex[:12]}"


BROKERS = {b.key: b for b in (
    Broker("nats", "nats://127.0.0.1:4222", "subject", ("NATS", 4222), False),
    Broker("jetstream", "nats://127.0.0.1:4222", "jetstream", ("NATS", 4222), True),
    Broker("mqtt", "mqtt://127.0.0.1:1883", "topic", ("Mosquitto", 1883), True),
    Broker("redis-channel", "redis://127.0.0.1:6379/0", "channel", ("Redis", 6379), False),
    Broker("redis-stream", "redis://127.0.0.1:6379/0", "stream", ("Redis", 6379), True),
    Broker("amqp", "amqp://guest:guest@127.0.0.1:5672/", "exchange", ("RabbitMQ", 5672), True),
    Broker("postgres", "postgresql://127.0.0.1:5432/test", "channel", ("PostgreSQL", 5432),
           False),
)}


@dataclass
class Seen:
    """What a plain subscriber got: (payload, marked) in order."""

    items: list[tuple[bytes, bool]] = field(default_factory=list)

    def payloads(self) -> list[bytes]:
        return [p for p, _ in self.items]


@contextlib.asynccontextmanager
async def plain_client(broker: Broker, mapping: dict[str, Any]) -> AsyncIterator[Any]:
    """A connected plain client of ``broker`` for the name of ``mapping``."""
    service_or_skip(*broker.service)
    client = _CLIENTS[broker.key.split("-")[0]](broker, mapping)
    await client.open()
    try:
        yield client
    finally:
        await client.close()


class _Plain:
    def __init__(self, broker: Broker, mapping: dict[str, Any]) -> None:
        self.broker, self.name = broker, str(mapping["name"])
        self.mapping = mapping
        self.seen = Seen()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None: ...

    async def publish(self, payload: bytes) -> None: ...

    async def subscribe(self) -> None:
        """Start collecting (returns once subscribed)."""

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class _Nats(_Plain):
    async def open(self) -> None:
        import nats
        self.nc = await nats.connect(self.broker.url)
        self.js = self.nc.jetstream()

    async def publish(self, payload: bytes) -> None:
        if self.broker.key == "jetstream":
            await self.js.publish(self.name, payload)
        else:
            await self.nc.publish(self.name, payload)
            await self.nc.flush()

    async def subscribe(self) -> None:
        async def got(msg: Any) -> None:
            self.seen.items.append((msg.data, MARKER in (msg.headers or {})))
        await self.nc.subscribe(self.name, cb=got)
        await self.nc.flush()

    async def close(self) -> None:
        await super().close()
        if self.broker.key == "jetstream":
            with contextlib.suppress(Exception):
                await self.js.delete_stream(self.mapping["stream"])
        await self.nc.close()


class _Mqtt(_Plain):
    async def open(self) -> None:
        import aiomqtt
        self.client = aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5,
                                     identifier=f"plain-{uuid.uuid4().hex[:10]}")
        await self.client.__aenter__()

    async def publish(self, payload: bytes) -> None:
        await self.client.publish(self.name, payload, qos=1)

    async def subscribe(self) -> None:
        await self.client.subscribe(self.name, qos=1)

        async def read() -> None:
            async for message in self.client.messages:
                props = getattr(message.properties, "UserProperty", None) or []
                self.seen.items.append((bytes(message.payload),  # type: ignore[arg-type]
                                        any(k == MARKER for k, _ in props)))
        self.task = asyncio.get_running_loop().create_task(read())

    async def close(self) -> None:
        await super().close()
        await self.client.__aexit__(None, None, None)


class _Redis(_Plain):
    async def open(self) -> None:
        import redis.asyncio as aioredis
        self.redis = aioredis.Redis.from_url(self.broker.url)

    async def publish(self, payload: bytes) -> None:
        if self.broker.kind == "stream":
            await self.redis.xadd(self.name, {"data": payload})
        else:
            await self.redis.publish(self.name, payload)

    async def subscribe(self) -> None:
        if self.broker.kind == "stream":
            async def read_stream() -> None:
                last = "0-0"  # the name is fresh: from its first entry, with no gap
                while True:
                    answer = await self.redis.xread({self.name: last}, block=500)
                    for _, entries in answer or []:
                        for entry_id, fields in entries:
                            last = entry_id
                            self.seen.items.append((fields.get(b"data", b""),
                                                    MARKER.encode() in fields))
            self.task = asyncio.get_running_loop().create_task(read_stream())
            return
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.name)

        async def read() -> None:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    self.seen.items.append((bytes(message["data"]), False))
        self.task = asyncio.get_running_loop().create_task(read())

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            await self.redis.delete(self.name)
        await self.redis.aclose()


class _Amqp(_Plain):
    async def open(self) -> None:
        import aio_pika
        self.connection = await aio_pika.connect(self.broker.url)
        self.channel = await self.connection.channel()
        self.exchange = await self.channel.declare_exchange(self.mapping["exchange"], "topic",
                                                            durable=True)

    async def publish(self, payload: bytes) -> None:
        import aio_pika
        await self.exchange.publish(aio_pika.Message(payload), routing_key=self.name)

    async def subscribe(self) -> None:
        queue = await self.channel.declare_queue(exclusive=True)
        await queue.bind(self.exchange, routing_key=self.name)

        async def got(message: Any) -> None:
            self.seen.items.append((message.body, MARKER in (message.headers or {})))
        await queue.consume(got, no_ack=True)

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            await self.channel.exchange_delete(self.mapping["exchange"])
        await self.connection.close()


class _Postgres(_Plain):
    async def open(self) -> None:
        import psycopg
        self.conn = await psycopg.AsyncConnection.connect(self.broker.url, autocommit=True)
        self.listener = await psycopg.AsyncConnection.connect(self.broker.url, autocommit=True)

    async def publish(self, payload: bytes) -> None:
        await self.conn.execute("SELECT pg_notify(%s, %s)", (self.name, payload.decode()))

    async def subscribe(self) -> None:
        from psycopg import sql
        await self.listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.name)))

        async def read() -> None:
            async for notify in self.listener.notifies():
                self.seen.items.append((notify.payload.encode(), False))
        self.task = asyncio.get_running_loop().create_task(read())

    async def close(self) -> None:
        await super().close()
        await self.conn.close()
        await self.listener.close()


_CLIENTS: dict[str, type[_Plain]] = {"nats": _Nats, "jetstream": _Nats, "mqtt": _Mqtt,
                                     "redis": _Redis, "amqp": _Amqp, "postgres": _Postgres}
