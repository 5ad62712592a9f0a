"""The names and JetStream plumbing of an inbox: its subject, stream, limits, consumer
and the pull loop that reads it.

Each node's inbox is the subject ``p2phost.inbox.NAME``; with ``durable`` it is kept in
the work-queue stream ``p2phost-inbox-NAME``, read by one durable pull consumer.

A consumer deleted under a running node (``nats consumer rm``) reads exactly as an idle
stream: every fetch times out, nats-py says nothing else. So an idle reader asks now and
then whether its consumer is still there, makes it again when it is not, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.msg import Msg
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

from ._progress import InProgress

log = logging.getLogger("p2phost.transport.nats")
_CONSUMER = "node"
_BATCH = 256
#: A message lost in flight (a cut connection) comes again after this; one the node
#: holds longer is kept in progress (``_progress``), not delivered again.
ACK_WAIT = 5.0
#: How long one fetch waits for records: on an idle stream every fetch times out after it.
_FETCH_WAIT = 1.0
#: How often (seconds) an idle reader asks whether its consumer still exists.
_CHECK_EVERY = 5.0
#: JetStream's error codes (``APIError.err_code``) of a missing consumer, and stream.
_NO_CONSUMER, _NO_STREAM = 10014, 10059


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
    await _add_consumer(js, stream)


async def _add_consumer(js: JetStreamContext, stream: str) -> None:
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=_CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT,
        max_ack_pending=-1))


async def check_consumer(js: JetStreamContext, name: str, url: str) -> bool:
    """Make inbox ``name``'s consumer again (and say so) when it was deleted; False
    when its stream is gone (a reader cannot make that: the node's start does)."""
    stream = inbox_stream(name)
    try:
        await js.consumer_info(stream, _CONSUMER)
        return True
    except NotFoundError as exc:
        if exc.err_code == _NO_STREAM:
            return False
        if exc.err_code != _NO_CONSUMER:
            raise
    # Not a fresh one: a purge may be making it again at the same moment (an
    # identical add is no error), and what was delivered unacknowledged comes again.
    await _add_consumer(js, stream)
    log.warning("the consumer %r of the inbox stream %s on %s was deleted while this node "
                "read it (nothing was read meanwhile): made it again", _CONSUMER, stream,
                url)
    return True


async def pull(js: JetStreamContext, name: str, deliver: Deliver, url: str,
               in_progress: InProgress) -> None:
    """Read inbox ``name``'s stream until cancelled, retrying with backoff on failures;
    what it fetches is ``in_progress`` until acknowledged."""
    failures = 0
    subscription: JetStreamContext.PullSubscription | None = None
    checked = time.monotonic()
    gone = False  # the stream is missing, and that was said
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
                if time.monotonic() - checked >= _CHECK_EVERY:
                    checked = time.monotonic()
                    there = await check_consumer(js, name, url)
                    if not there and not gone:
                        log.error("the inbox stream %s on %s was deleted while this node "
                                  "ran: nothing sent to it there arrives\nfix: restart the "
                                  "node (stop it, then p2phost run), which makes the stream "
                                  "again", inbox_stream(name), url)
                    gone = not there
            stop_if_cancelled()
            failures = 0
            await _hand_over(messages, deliver, in_progress)
            continue
        except (NatsError, OSError) as exc:
            if failures == 0:
                log.warning("reading the inbox stream on %s failed (retrying): %s: %s",
                            url, type(exc).__name__, str(exc) or "(no reason given)")
        stop_if_cancelled()
        await asyncio.sleep(backoff(failures))
        failures += 1


async def _hand_over(messages: list[Msg], deliver: Deliver, in_progress: InProgress) -> None:
    """Deliver a fetched batch in order, letting go of each message as it is delivered:
    one the node then drops unacknowledged is held by nothing, so no longer kept in
    progress. All are in progress from the start: the last ones may wait long behind a
    full mailbox (``deliver`` waits for room)."""
    for message in messages:
        in_progress.add(message)
    messages.reverse()
    while messages:
        message = messages.pop()
        await deliver(message.data, message)
