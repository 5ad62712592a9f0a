"""AMQP 0-9-1 (RabbitMQ) as an inbox medium, through aio-pika.

Each node's inbox is the durable queue ``p2phost.inbox.NAME``. Records are published
persistent through the default exchange with ``mandatory`` set and publisher confirms
on, so a send returns once the broker has the message, and appending to a peer id with
no queue fails at once (the broker returns it unroutable). The node consumes with
manual acknowledgements and a prefetch window; a message is acknowledged once the node
is done with it, and the broker requeues what a lost connection (or a killed node) left
unacknowledged. The connection is aio-pika's robust one: it reconnects by itself.

This module is the medium's connection, consuming and publishing. The queues' names, the
arguments that enforce retention and their administration are in :mod:`._queues`; saying
when the connection is lost and when it is back (once, though both the connection and
the reader see it), in :mod:`._watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from p2phost_sdk import AddressError, TransportError
from p2phost_sdk.inbox import (
    Deliver,
    InboxFull,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumRefused,
    MediumUnavailable,
    UnknownInbox,
    backoff,
    stop_if_cancelled,
)

from ._queues import LOST, InboxQueues, backlog_queue, inbox_queue
from ._watch import HEARTBEAT, Outage

log = logging.getLogger("p2phost.transport.amqp")
_PREFETCH = 1024
_MAX_MESSAGE = 128 * 1024 * 1024  # RabbitMQ's default max_message_size


class AmqpMedium(InboxQueues, Medium):
    """One node's link to one AMQP broker (virtual host)."""

    max_record_size = _MAX_MESSAGE - 4096  # room for the properties

    def __init__(self, address: MediumAddress) -> None:
        if address.parts.query:
            form = "amqp://USER:PASSWORD@HOST:PORT/VHOST"
            raise AddressError(address.public, f"expected {form} (no query)", expected=form)
        self.url = address.public
        self._connect_url = address.url
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._reader: asyncio.Task[None] | None = None
        self._backlog = False
        self._outage = Outage(self)

    async def connect(self) -> None:
        """Open a robust connection and a confirming publisher channel."""
        try:
            connection = await aio_pika.connect_robust(self._connect_url, timeout=5.0,
                                                       reconnect_interval=1.0,
                                                       heartbeat=HEARTBEAT)
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            raise MediumRefused(f"the AMQP broker at {self.url} refused the credentials: {exc} "
                                "(fix the user and password in the address)") from exc
        except (aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError,
                TimeoutError) as exc:
            if "NOT_ALLOWED" in str(exc) or "ACCESS_REFUSED" in str(exc):
                raise MediumRefused(f"the AMQP broker at {self.url} refused the connection: "
                                    f"{exc} (check the virtual host and permissions)") from exc
            raise MediumUnavailable(f"AMQP broker at {self.url}: "
                                    f"{exc or type(exc).__name__}") from exc
        self._connection = connection
        self._outage.watch(connection)
        self._publisher = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        """Declare the queue (durable unless it is a reply inbox) and start consuming."""
        assert self._connection is not None
        durable = "-" not in name
        if durable:
            await self._declare_limited(name)
        try:
            self._consumer = await self._connection.channel()
            await self._consumer.set_qos(prefetch_count=_PREFETCH)
            self._queue = await self._consumer.declare_queue(
                inbox_queue(name), durable=durable, passive=durable)
        except LOST as exc:
            raise MediumUnavailable(f"AMQP broker at {self.url}: cannot declare the inbox "
                                    f"queue: {exc}") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise MediumRefused(f"the AMQP broker at {self.url} refused the inbox queue: "
                                f"{exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(
            self._read(name, self._queue, deliver), name=f"amqp reader {name[:12]}")

    async def _read(self, name: str, queue: AbstractQueue, deliver: Deliver) -> None:
        failures = 0
        while True:
            try:
                if self._backlog:
                    await self._read_backlog(name, deliver)
                async with queue.iterator() as messages:
                    if failures:
                        self._outage.back()
                    failures = 0
                    async for message in messages:
                        await deliver(message.body, message)
            except LOST as exc:
                self._outage.lost(exc)
            stop_if_cancelled()
            await asyncio.sleep(backoff(failures))
            failures += 1

    async def _read_backlog(self, name: str, deliver: Deliver) -> None:
        # Everything in it was stored before anything in the inbox queue: it comes
        # first, one get at a time, until it is empty (it gets nothing new).
        assert self._consumer is not None
        backlog = await self._consumer.declare_queue(backlog_queue(name), passive=True)
        while True:
            message = await backlog.get(no_ack=False, fail=False)
            if message is None:
                break
            await deliver(message.body, message)
        self._backlog = False

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        """Publish persistent messages in order and wait for every confirm."""
        channel = self._publisher
        if channel is None or channel.is_closed:
            raise MediumUnavailable(f"AMQP broker at {self.url}: the channel is closed")
        exchange = channel.default_exchange
        queue = inbox_queue(name)
        # Each publish takes the channel's (fair) lock before its first real wait, so
        # starting them in order sends them in order.
        results = await asyncio.gather(*(
            exchange.publish(aio_pika.Message(record,
                                              delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                             routing_key=queue, mandatory=True)
            for record in records), return_exceptions=True)
        stop_if_cancelled()
        for result in results:
            if isinstance(result, aiormq.exceptions.PublishError):
                raise UnknownInbox(f"no inbox {name} on {self.url}")
            if isinstance(result, aiormq.exceptions.DeliveryError):  # nacked: reject-publish
                raise InboxFull(
                    f"the inbox of {name} on {self.url} is full (the broker refused the "
                    "message: its queue is at x-max-length or x-max-length-bytes, the "
                    "node's max-messages or max-bytes): nothing was stored; it empties as "
                    "that node runs (its operator can raise the limit in "
                    "[config.amqp-transport], or `p2phost inbox purge`)")
            if isinstance(result, (*LOST, TimeoutError)):
                raise MediumUnavailable(f"AMQP broker at {self.url}: {result}")
            if isinstance(result, BaseException):
                raise TransportError(f"the AMQP broker at {self.url} refused a message: "
                                     f"{result}") from result

    def record_of(self, token: Any) -> Hashable | None:
        """A first delivery is a message of its own (this delivery, which the node
        holds while it matters: its id is no other's); a redelivery (after a lost
        channel) may be one the node holds: None."""
        if not isinstance(token, AbstractIncomingMessage) or token.redelivered is not False:
            return None
        return id(token)

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """Acknowledge the deliveries (those of a lost channel were requeued: skip them)."""
        for message in tokens:
            assert isinstance(message, AbstractIncomingMessage)
            with contextlib.suppress(*LOST, aio_pika.exceptions.MessageProcessError):
                await message.ack()

    async def close(self, *, delete_inbox: bool) -> None:
        """Stop consuming; delete a deleted inbox's queue; disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._connection is None:
            return
        try:
            # Through the publisher's channel: cancelling the reader may have closed the
            # consumer's (aiormq closes a channel whose call was cancelled).
            if delete_inbox and self._queue is not None and self._publisher is not None:
                await self._publisher.queue_delete(self._queue.name)
        except (*LOST, aiormq.exceptions.AMQPError) as exc:
            log.debug("could not delete the inbox queue on %s: %s", self.url, exc)
        finally:
            with contextlib.suppress(*LOST, aiormq.exceptions.AMQPError):
                await self._connection.close()


class AmqpTransport(InboxTransport):
    """``amqp://USER:PASSWORD@HOST:PORT/VHOST``: node inboxes as durable AMQP queues."""

    schemes = ("amqp",)
    default_port = 5672
    address_example = "amqp://USER:PASSWORD@HOST:PORT/VHOST"

    def make_medium(self, address: MediumAddress) -> Medium:
        """An AMQP medium for ``address``."""
        return AmqpMedium(address)
