"""AMQP 0-9-1 (RabbitMQ) as an inbox medium, through aio-pika.

Each node's inbox is the durable queue ``p2phost.inbox.NAME``. Records are published
persistent through the default exchange with ``mandatory`` set and publisher confirms
on, so a send returns once the broker has the message, and appending to a peer id with
no queue fails at once (the broker returns it unroutable). The node consumes with
manual acknowledgements and a prefetch window; a message is acknowledged once the node
is done with it, and the broker requeues what a lost connection (or a killed node) left
unacknowledged. The connection is aio-pika's robust one: it reconnects by itself.

Retention is the queue's own: ``x-max-length`` / ``x-max-length-bytes`` with
``x-overflow = reject-publish`` (the broker nacks a publish to a full queue: the sender
gets :class:`InboxFull`), and ``x-message-ttl`` with a dead-letter route to the queue
``p2phost.inbox-expired.NAME``, which the node empties and counts when it starts.
RabbitMQ cannot change a queue's arguments: a queue declared with others (by a sender
before the node first ran, or by a run with other settings) has its records moved to the
backlog queue ``p2phost.inbox-backlog.NAME``, read first, and is declared anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from p2phost_sdk import TransportError
from p2phost_sdk.inbox import (
    Deliver,
    InboxFull,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumRefused,
    MediumUnavailable,
    Retention,
    UnknownInbox,
    backoff,
    stop_if_cancelled,
)

from ._watch import HEARTBEAT, watch

log = logging.getLogger("p2phost.transport.amqp")
_PREFETCH = 1024
_MAX_MESSAGE = 128 * 1024 * 1024  # RabbitMQ's default max_message_size
# Connection-level failures: worth a retry once the robust connection is back.
_LOST = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
         aiormq.exceptions.ChannelClosed, ConnectionError, OSError)


def inbox_queue(name: str) -> str:
    """The queue of inbox ``name``."""
    return f"p2phost.inbox.{name}"


def expired_queue(name: str) -> str:
    """Where the broker dead-letters the records of inbox ``name`` that passed its
    ``x-message-ttl`` (counted as expired unread)."""
    return f"p2phost.inbox-expired.{name}"


def backlog_queue(name: str) -> str:
    """Where the records of inbox ``name`` wait that were stored while its queue had
    other limits (handled before the queue's own)."""
    return f"p2phost.inbox-backlog.{name}"


_MOVE_ATTEMPTS = 5
_MOVE_BATCH = 256


def queue_arguments(name: str, retention: Retention) -> dict[str, Any]:
    """The inbox queue's arguments for ``retention`` (RabbitMQ enforces them)."""
    arguments: dict[str, Any] = {}
    if retention.max_messages:
        arguments["x-max-length"] = retention.max_messages
    if retention.max_bytes:
        arguments["x-max-length-bytes"] = retention.max_bytes
    if arguments:
        arguments["x-overflow"] = "reject-publish"
    if retention.max_age:
        arguments["x-message-ttl"] = max(1, int(retention.max_age * 1000))
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = expired_queue(name)
    return arguments


class _Inequivalent(MediumRefused):
    """The queue exists with other arguments (PRECONDITION_FAILED)."""


class AmqpMedium(Medium):
    """One node's link to one AMQP broker (virtual host)."""

    max_record_size = _MAX_MESSAGE - 4096  # room for the properties

    def __init__(self, address: MediumAddress) -> None:
        if address.parts.query:
            raise TransportError(f"bad address {address.public!r}: expected "
                                 "amqp://USER:PASSWORD@HOST:PORT/VHOST (no query)")
        self.url = address.public
        self._connect_url = address.url
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._reader: asyncio.Task[None] | None = None
        self._backlog = False

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
        watch(connection, self)
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
        except _LOST as exc:
            raise MediumUnavailable(f"AMQP broker at {self.url}: cannot declare the inbox "
                                    f"queue: {exc}") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise MediumRefused(f"the AMQP broker at {self.url} refused the inbox queue: "
                                f"{exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(
            self._read(name, self._queue, deliver), name=f"amqp reader {name[:12]}")

    async def _declare_limited(self, name: str) -> None:
        """Declare the inbox queue with this node's retention, and take the count of
        what expired while the node was away."""
        arguments = queue_arguments(name, self.retention)
        if "x-message-ttl" in arguments:  # before anything can expire into it
            await self._on_channel(name, "create", queue=expired_queue(name))
        try:
            await self._on_channel(name, "create", arguments=arguments)
        except _Inequivalent:
            if not await self._redeclare(name, arguments):
                log.warning("the inbox queue %s on %s was declared with other limits and "
                            "senders kept declaring it again: the new retention applies "
                            "from the next start", inbox_queue(name), self.url)
        backlog = await self._on_channel(name, "stats", queue=backlog_queue(name))
        if backlog is not None and not backlog.declaration_result.message_count:
            # Emptied by an earlier run (what a killed one left unacknowledged is back).
            with contextlib.suppress(_Inequivalent):
                await self._on_channel(name, "delete-empty", queue=backlog_queue(name))
            backlog = None
        self._backlog = backlog is not None
        purged = await self._on_channel(name, "purge", queue=expired_queue(name))
        self.expired_at_open = 0 if purged is None else int(purged.message_count or 0)

    async def _redeclare(self, name: str, arguments: dict[str, Any]) -> bool:
        """Declare the inbox queue anew with ``arguments``: it was declared with other
        limits (by a sender before this node first ran, or by a run with other
        settings), and the broker cannot change a queue's arguments. Its records move to
        the backlog queue first (read before the inbox's own), then the empty queue is
        deleted and declared again; a sender that publishes in between finds no queue
        (its publish comes back unroutable and it declares the queue itself, without
        limits), so this repeats a few times. Whether it worked."""
        for _ in range(_MOVE_ATTEMPTS):
            await self._move_to_backlog(name)
            try:
                await self._on_channel(name, "delete-empty")
                await self._on_channel(name, "create", arguments=arguments)
            except _Inequivalent:  # not empty any more, or declared again meanwhile
                continue
            return True
        return False

    async def _move_to_backlog(self, name: str) -> None:
        # Publish (persistent, confirmed) before acking: a node killed meanwhile leaves
        # copies in both, and the second is dropped as a copy when it is read.
        if self._connection is None:
            raise MediumUnavailable(f"AMQP broker at {self.url}: not connected")
        try:
            channel = await self._connection.channel(publisher_confirms=True)
            try:
                await channel.declare_queue(backlog_queue(name), durable=True)
                source = await channel.declare_queue(inbox_queue(name), passive=True)
                moved = 0
                while True:
                    batch: list[AbstractIncomingMessage] = []
                    while len(batch) < _MOVE_BATCH:
                        message = await source.get(no_ack=False, fail=False)
                        if message is None:
                            break
                        batch.append(message)
                    if not batch:
                        break
                    await asyncio.gather(*(channel.default_exchange.publish(
                        aio_pika.Message(m.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=backlog_queue(name)) for m in batch))
                    await batch[-1].ack(multiple=True)
                    moved += len(batch)
                if moved:
                    log.info("moved %d records stored under other limits to %s on %s",
                             moved, backlog_queue(name), self.url)
            finally:
                with contextlib.suppress(*_LOST, aiormq.exceptions.AMQPError):
                    await channel.close()
        except aiormq.exceptions.ChannelNotFoundEntity:
            return
        except _LOST as exc:
            raise MediumUnavailable(f"AMQP broker at {self.url}: {exc}") from exc

    async def _read(self, name: str, queue: AbstractQueue, deliver: Deliver) -> None:
        failures = 0
        while True:
            try:
                if self._backlog:
                    await self._read_backlog(name, deliver)
                async with queue.iterator() as messages:
                    if failures:
                        log.info("consuming again from the AMQP broker at %s", self.url)
                    failures = 0
                    async for message in messages:
                        await deliver(message.body, message)
            except _LOST as exc:
                if failures == 0:
                    log.warning("lost the AMQP broker at %s (reconnecting): %s", self.url, exc)
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

    async def _on_channel(self, name: str, work: str, *, queue: str | None = None,
                          arguments: dict[str, Any] | None = None) -> Any:
        # A declaration the broker refuses closes its channel: one of its own each.
        if self._connection is None:
            raise MediumUnavailable(f"AMQP broker at {self.url}: not connected")
        queue_name = queue or inbox_queue(name)
        try:
            channel = await self._connection.channel()
            try:
                if work == "create":
                    return await channel.declare_queue(queue_name, durable=True,
                                                       arguments=arguments)
                try:
                    found = await channel.declare_queue(queue_name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return None
                if work == "purge":
                    return await found.purge()
                if work in ("delete", "delete-empty"):
                    return await found.delete(if_unused=False, if_empty=work != "delete")
                return found
            finally:
                with contextlib.suppress(*_LOST, aiormq.exceptions.AMQPError):
                    await channel.close()
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise _Inequivalent(f"the AMQP broker at {self.url} refused the inbox queue "
                                f"{queue_name}: {exc}") from exc
        except _LOST as exc:
            raise MediumUnavailable(f"AMQP broker at {self.url}: {exc}") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise MediumRefused(f"the AMQP broker at {self.url} refused the inbox queue "
                                f"{inbox_queue(name)}: {exc}") from exc

    async def create_inbox(self, name: str) -> None:
        """Declare the durable queue: what is published before the node first runs
        waits there. A queue that exists with its node's limits is left as it is."""
        with contextlib.suppress(_Inequivalent):
            await self._on_channel(name, "create")

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """The queue's ready message count (bytes: the broker does not say here)."""
        queue = await self._on_channel(name, "stats")
        expired = await self._on_channel(name, "stats", queue=expired_queue(name))
        backlog = await self._on_channel(name, "stats", queue=backlog_queue(name))
        gone = 0 if expired is None else int(expired.declaration_result.message_count or 0)
        older = 0 if backlog is None else int(backlog.declaration_result.message_count or 0)
        if queue is None:
            return {"exists": False, "records": older, "bytes": None, "expired": gone}
        count = int(queue.declaration_result.message_count or 0) + older
        return {"exists": True, "records": count, "bytes": None, "expired": gone}

    async def purge_inbox(self, name: str) -> int | None:
        """``queue.purge`` (and of its backlog): the ready messages go, the queue stays."""
        older = await self._on_channel(name, "purge", queue=backlog_queue(name))
        result = await self._on_channel(name, "purge")
        if result is None:
            return None
        return int(result.message_count or 0) + (0 if older is None else
                                                  int(older.message_count or 0))

    async def delete_inbox(self, name: str) -> bool:
        """``queue.delete`` (and of its backlog and expired records' queues)."""
        await self._on_channel(name, "delete", queue=expired_queue(name))
        await self._on_channel(name, "delete", queue=backlog_queue(name))
        return await self._on_channel(name, "delete") is not None

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
            if isinstance(result, (*_LOST, TimeoutError)):
                raise MediumUnavailable(f"AMQP broker at {self.url}: {result}")
            if isinstance(result, BaseException):
                raise TransportError(f"the AMQP broker at {self.url} refused a message: "
                                     f"{result}") from result

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """Acknowledge the deliveries (those of a lost channel were requeued: skip them)."""
        for message in tokens:
            assert isinstance(message, AbstractIncomingMessage)
            with contextlib.suppress(*_LOST, aio_pika.exceptions.MessageProcessError):
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
        except (*_LOST, aiormq.exceptions.AMQPError) as exc:
            log.debug("could not delete the inbox queue on %s: %s", self.url, exc)
        finally:
            with contextlib.suppress(*_LOST, aiormq.exceptions.AMQPError):
                await self._connection.close()


class AmqpTransport(InboxTransport):
    """``amqp://USER:PASSWORD@HOST:PORT/VHOST``: node inboxes as durable AMQP queues."""

    schemes = ("amqp",)
    default_port = 5672
    address_example = "amqp://USER:PASSWORD@HOST:PORT/VHOST"

    def make_medium(self, address: MediumAddress) -> Medium:
        """An AMQP medium for ``address``."""
        return AmqpMedium(address)
