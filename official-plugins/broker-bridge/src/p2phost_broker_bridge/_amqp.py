"""RabbitMQ (AMQP 0-9-1) exchanges with routing keys, through aio-pika.

Out: publish to the exchange with the mapping's name as routing key, the marker as a
header, persistent and confirmed when acknowledged. In: a queue of this mapping bound to
the exchange with the name as binding key (``#`` and ``*`` patterns on a topic
exchange), consumed with a prefetch window; an acknowledged mapping's queue is durable
and each message is acknowledged once the node has it, so a killed node's are requeued.
An exchange named ``amq.*`` is the broker's own and is only looked up; others are
declared (``exchange-type``, durable).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions

from ._endpoint import MARKER, Endpoint, Incoming
from ._errors import BrokerUnavailable


class AmqpEndpoint(Endpoint):
    """One robust aio-pika connection and channel."""

    _connection: Any = None
    _exchange: Any = None
    _channel: Any = None
    _queue: Any = None

    async def open(self) -> None:
        m = self.mapping
        try:
            self._connection = await aio_pika.connect_robust(m.broker, timeout=self.timeout)
            self._channel = await self._connection.channel(
                publisher_confirms=m.acknowledged, on_return_raises=False)
            await self._channel.set_qos(prefetch_count=self.queue)
            if m.exchange.startswith("amq."):
                self._exchange = await self._channel.get_exchange(m.exchange, ensure=True)
            else:
                self._exchange = await self._channel.declare_exchange(
                    m.exchange, m.exchange_type, durable=True)
            if m.direction == "in":
                durable = m.acknowledged
                self._queue = await self._channel.declare_queue(
                    m.durable_name(self.peer_id), durable=durable, auto_delete=not durable,
                    exclusive=not durable)
                await self._queue.bind(self._exchange, routing_key=m.name)
        except (OSError, aio_pika.exceptions.AMQPException, aiormq.exceptions.AMQPError) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot use RabbitMQ for {m.where} (exchange "
                                    f"{m.exchange!r}): {exc}") from exc

    async def publish(self, payload: bytes) -> None:
        m = self.mapping
        mode = (aio_pika.DeliveryMode.PERSISTENT if m.acknowledged
                else aio_pika.DeliveryMode.NOT_PERSISTENT)
        await self._exchange.publish(
            aio_pika.Message(payload, headers={MARKER: self.peer_id}, delivery_mode=mode),
            routing_key=m.name, timeout=self.timeout)

    async def receive(self) -> AsyncIterator[Incoming]:
        durable = self.mapping.acknowledged
        async with self._queue.iterator(no_ack=not durable) as messages:
            async for message in messages:
                marked = MARKER in (message.headers or {})
                yield Incoming(message.body, marked, message.ack if durable else None)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = self._exchange = self._queue = None
