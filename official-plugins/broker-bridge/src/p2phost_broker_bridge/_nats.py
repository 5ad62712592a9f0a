"""NATS subjects (core: at most once) and JetStream streams (a durable pull consumer,
acknowledged after the node has each message), through nats-py. The marker is a header.

JetStream delivers again a message not acknowledged within the consumer's ack wait (the
mapping's ``redeliver-after``). The pump handles a fetched batch one message at a time,
and a message can be in its hands far longer than that: no peer takes the topic yet, or
a batch of 64 behind a slow node. The server then has it ready again, and the next fetch,
racing the late ack, brings a second copy that the bridge forwards again. So while a
batch is in hand, every quarter of the ack wait the endpoint sends ``+WPI`` (in progress:
the ack wait starts again) for the messages of it not yet acknowledged. The ack wait
stays what it is for, how soon a message lost with the bridge (killed, disconnected)
comes again.

What ``+WPI`` cannot reach still comes again: a fetch may return before the server ends
its pull request, and what the server delivers to that request meanwhile waits in
nats-py's queue, unseen, until the next fetch, which then brings both that copy and the
one delivered again. So a message whose stream sequence the endpoint acknowledged
recently (two batches' worth) is acknowledged again and skipped, not forwarded twice.

This is the nats-transport plugin's ``_progress`` idea, written small here: plugins share
only ``p2phost_sdk``, and the bridge needs no weak references, since the pump
acknowledges every message it took or fails and closes the endpoint, which forgets the
batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from p2phost_sdk import TaskOwner, with_timeout

from ._endpoint import MARKER, Endpoint, Incoming
from ._errors import PLUGIN, BrokerUnavailable

log = logging.getLogger("p2phost.plugin.broker-bridge")
_BATCH = 64


class NatsEndpoint(Endpoint):
    """One connection to a NATS server (nats-py reconnects by itself)."""

    _nc: Any = None
    _js: Any = None
    _sub: Any = None
    #: JetStream in: the task keeping the batch in hand in progress, when open.
    _tasks: TaskOwner | None = None
    #: id(message) -> message: the batch in hand, not yet acknowledged.
    _held: dict[int, Msg]
    #: When the batch in hand was fetched or last said to be in progress (monotonic).
    _told = 0.0
    #: The stream sequences acknowledged last (oldest first), to know a copy by.
    _acked: dict[int, None]

    async def open(self) -> None:
        m = self.mapping

        async def quiet(exc: Exception) -> None:
            log.debug("NATS %s: %s", m.where, exc)

        try:
            self._nc = await nats.connect(servers=[m.broker], connect_timeout=self.timeout,
                                          max_reconnect_attempts=-1, reconnect_time_wait=1,
                                          error_cb=quiet, allow_reconnect=True)
        except (OSError, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"cannot reach NATS for {m.where}: {exc}") from exc
        if m.kind == "jetstream":
            self._js = self._nc.jetstream(timeout=self.timeout)
            try:
                await self._js.stream_info(m.stream)
            except NotFoundError:
                await self._js.add_stream(name=m.stream, subjects=[m.name])
        if m.direction == "in" and self._js is None:
            self._sub = await self._nc.subscribe(m.name, pending_msgs_limit=self.queue)
        elif m.direction == "in":
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=m.redeliver_after,
                                    deliver_policy=DeliverPolicy.NEW,
                                    max_ack_pending=max(self.queue, _BATCH))
            self._sub = await self._js.pull_subscribe(
                m.name, durable=m.durable_name(self.peer_id), stream=m.stream, config=config)
            self._held, self._acked = {}, {}
            self._tasks = TaskOwner(f"{PLUGIN} {m.where}", logger=log)
            self._tasks.spawn(self._keep_in_progress(m.redeliver_after / 4),
                              f"{PLUGIN} in progress {m.key}")

    async def publish(self, payload: bytes) -> None:
        headers = {MARKER: self.peer_id}
        if self._js is not None:
            await self._js.publish(self.mapping.name, payload, timeout=self.timeout,
                                   headers=headers)
            return
        await self._nc.publish(self.mapping.name, payload, headers=headers)
        if self.mapping.acknowledged:
            await self._nc.flush(timeout=self.timeout)

    async def receive(self) -> AsyncIterator[Incoming]:
        sub = self._sub
        if self._js is None:
            async for msg in sub.messages:
                yield Incoming(msg.data, MARKER in (msg.headers or {}))
            raise BrokerUnavailable(f"the subscription to {self.mapping.where} ended")
        while True:
            try:
                batch = await sub.fetch(min(self.queue, _BATCH), timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            self._held = {id(msg): msg for msg in batch}
            self._told = time.monotonic()
            for msg in batch:
                if msg.metadata.sequence.stream in self._acked:
                    log.debug("%s: a copy of a message acknowledged already, skipped",
                              self.mapping.where)
                    await with_timeout(self._ack(msg), self.timeout, plugin=PLUGIN,
                                       doing="acknowledging a copy acknowledged already")
                    continue
                yield Incoming(msg.data, MARKER in (msg.headers or {}),
                               functools.partial(self._ack, msg))

    async def _ack(self, msg: Msg) -> None:
        await msg.ack()
        self._held.pop(id(msg), None)
        self._acked[msg.metadata.sequence.stream] = None
        if len(self._acked) > 2 * _BATCH:
            del self._acked[next(iter(self._acked))]

    async def _keep_in_progress(self, every: float) -> None:
        """Until cancelled: every ``every`` seconds, ``+WPI`` for each message of the
        batch in hand, once that batch was fetched or last told at least as long ago."""
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            if not self._held or now - self._told < every:
                continue
            self._told = now
            for key, msg in list(self._held.items()):
                if key not in self._held:  # acknowledged meanwhile
                    continue
                try:
                    await msg.in_progress()
                except (OSError, nats.errors.Error):
                    break  # disconnected: delivered again after the ack wait at worst
                except Exception:  # not the end of +WPI for the endpoint's life
                    log.warning("%s: telling the broker a message is in progress failed",
                                self.mapping.where, exc_info=True)
                    break

    async def close(self) -> None:
        if self._tasks is not None:
            await self._tasks.close(self.timeout)
            self._tasks, self._held = None, {}
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._js = self._sub = None
