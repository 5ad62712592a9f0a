"""Redis pub/sub channels (at most once; loops told by the echo filter) and streams (a
consumer group per mapping, XACK after the node has each entry), through redis-py.

A stream entry's payload is its field ``field`` (``data`` by default); the bridge's own
entries carry the marker as a second field. An acknowledged in mapping reads the entries
it was given and never acknowledged (a killed node's) before new ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from ._endpoint import MARKER, Endpoint, Incoming
from ._errors import BrokerUnavailable

_BATCH = 64


class RedisEndpoint(Endpoint):
    """One redis-py client (a pool of one connection per use)."""

    _redis: Any = None
    _pubsub: Any = None

    async def open(self) -> None:
        m = self.mapping
        self._redis = aioredis.Redis.from_url(m.broker, socket_connect_timeout=self.timeout,
                                              socket_keepalive=True)
        try:
            await self._redis.ping()
            if m.kind == "stream" and m.direction == "in":
                with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP
                    await self._redis.xgroup_create(m.name, m.durable_name(self.peer_id),
                                                    id="$", mkstream=True)
            if m.kind == "channel" and m.direction == "in":
                self._pubsub = self._redis.pubsub()
                await self._pubsub.subscribe(m.name)
        except (OSError, redis.exceptions.RedisError) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot reach Redis for {m.where}: {exc}") from exc

    async def publish(self, payload: bytes) -> None:
        m = self.mapping
        if m.kind == "stream":
            await self._redis.xadd(m.name, {m.field: payload, MARKER: self.peer_id})
            return
        self.echo.remember(payload)
        await self._redis.publish(m.name, payload)

    async def receive(self) -> AsyncIterator[Incoming]:
        m = self.mapping
        if m.kind == "channel":
            while True:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                         timeout=1.0)
                if message is not None and message["type"] == "message":
                    data = bytes(message["data"])
                    yield Incoming(data, self.echo.echo(data))
        group, consumer = m.durable_name(self.peer_id), m.durable_name(self.peer_id)
        start: str | bytes = "0"  # first what this consumer was given and never acked
        while True:
            answer = await self._redis.xreadgroup(group, consumer, {m.name: start},
                                                  count=min(self.queue, _BATCH), block=1000)
            entries = answer[0][1] if answer else []
            if start != ">":
                if not entries:
                    start = ">"
                    continue
                start = entries[-1][0]
            for entry_id, fields in entries:
                payload = fields.get(m.field.encode())
                yield Incoming(b"" if payload is None else bytes(payload),
                               MARKER.encode() in fields, _acker(self._redis, m.name, group,
                                                                 entry_id))

    async def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        self._redis = self._pubsub = None


def _acker(client: Any, stream: str, group: str, entry_id: bytes) -> Any:
    async def ack() -> None:
        await client.xack(stream, group, entry_id)
    return ack
