"""The names and JetStream plumbing of an inbox: its subject, stream, limits, consumer
and the pull loop that reads it.

Each node's inbox is the subject ``p2phost.inbox.NAME``; with ``durable`` it is kept in
the work-queue stream ``p2phost-inbox-NAME``, read by one durable pull consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from p2phost_sdk.inbox import Deliver, Retention, backoff, stop_if_cancelled

log = logging.getLogger("p2phost.transport.nats")
_CONSUMER = "node"
_BATCH = 256
_ACK_WAIT = 5.0  # a message lost in flight (a cut connection) comes again after this
#: How long one fetch waits for records: on an idle stream every fetch times out after it.
_FETCH_WAIT = 1.0


def inbox_subject(name: str) -> str:
    """The subject of inbox ``name``."""
    return f"p2phost.inbox.{name}"


def inbox_stream(name: str) -> str:
    """The JetStream stream of inbox ``name``."""
    return f"p2phost-inbox-{name}"


async def add_stream(js: JetStreamContext, name: str) -> None:
    """Create inbox ``name``'s work-queue stream unless it exists."""
    with contextlib.suppress(BadRequestError):  # exists already (maybe with limits)
        await js.add_stream(name=inbox_stream(name), subjects=[inbox_subject(name)],
                            retention=RetentionPolicy.WORK_QUEUE,
                            storage=StorageType.FILE)


async def limit_stream(js: JetStreamContext, name: str, retention: Retention) -> None:
    """Set the node's retention as the stream's own limits."""
    # Publishes past a count or size are refused (discard new); records past max_age
    # are removed by the server.
    await js.update_stream(StreamConfig(
        name=inbox_stream(name), subjects=[inbox_subject(name)],
        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
        max_msgs=retention.max_messages or -1, max_bytes=retention.max_bytes or -1,
        max_age=retention.max_age or None,
        discard=DiscardPolicy.NEW if retention else DiscardPolicy.OLD))


async def fresh_consumer(js: JetStreamContext, name: str) -> None:
    """Recreate inbox ``name``'s durable consumer, delivering from the stream's start."""
    # Deliver-all from the stream's first record: what an earlier run left
    # unacknowledged comes again at once (an old consumer would wait for the ack
    # deadline first), and what was removed before it is not counted as expired.
    stream = inbox_stream(name)
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(stream, _CONSUMER)
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=_CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=_ACK_WAIT,
        max_ack_pending=-1))


async def pull(js: JetStreamContext, name: str, deliver: Deliver, url: str) -> None:
    """Read inbox ``name``'s stream until cancelled, retrying with backoff on failures."""
    failures = 0
    subscription: JetStreamContext.PullSubscription | None = None
    while True:
        try:
            if subscription is None:
                subscription = await js.pull_subscribe_bind(
                    durable=_CONSUMER, stream=inbox_stream(name))
            try:
                messages = await subscription.fetch(_BATCH, timeout=_FETCH_WAIT)
            except TimeoutError:
                # Nothing came in time: an idle stream, not a failure. nats-py raises
                # its own TimeoutError (a subclass), or a bare asyncio.TimeoutError when
                # the wait ran out between its two pull requests: the builtin
                # TimeoutError, an OSError, which the handler below took for a failure.
                messages = []
            stop_if_cancelled()
            failures = 0
            for message in messages:
                await deliver(message.data, message)
            continue
        except (NatsError, OSError) as exc:
            if failures == 0:
                log.warning("reading the inbox stream on %s failed (retrying): %s: %s",
                            url, type(exc).__name__, str(exc) or "(no reason given)")
        stop_if_cancelled()
        await asyncio.sleep(backoff(failures))
        failures += 1
