"""The inbox's queues on the broker: their names, the arguments that enforce a node's
retention, and the one-off declarations, counts, purges and deletions on channels of their
own (the part of :class:`~._medium.AmqpMedium` that ``p2phost inbox`` and opening an inbox
use; consuming and publishing are the medium's).

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
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from p2phost_sdk.inbox import MediumRefused, MediumUnavailable, Retention

log = logging.getLogger("p2phost.transport.amqp")
# Connection-level failures: worth a retry once the robust connection is back.
LOST = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
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


class InboxQueues:
    """The part of :class:`~._medium.AmqpMedium` that declares and administers its
    inbox queues, each call on a channel of its own."""

    url: str
    retention: Retention
    expired_at_open: int
    _connection: AbstractRobustConnection | None
    _backlog: bool

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
                with contextlib.suppress(*LOST, aiormq.exceptions.AMQPError):
                    await channel.close()
        except aiormq.exceptions.ChannelNotFoundEntity:
            return
        except LOST as exc:
            raise MediumUnavailable(f"AMQP broker at {self.url}: {exc}") from exc

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
                with contextlib.suppress(*LOST, aiormq.exceptions.AMQPError):
                    await channel.close()
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise _Inequivalent(f"the AMQP broker at {self.url} refused the inbox queue "
                                f"{queue_name}: {exc}") from exc
        except LOST as exc:
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
