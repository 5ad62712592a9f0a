"""NATS subjects (core: at most once) and JetStream streams (a durable pull consumer,
acknowledged after the node has each message), through nats-py. The marker is a header."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ._endpoint import MARKER, Endpoint, Incoming
from ._errors import BrokerUnavailable

log = logging.getLogger("p2phost.plugin.broker-bridge")
_BATCH = 64


class NatsEndpoint(Endpoint):
    """One connection to a NATS server (nats-py reconnects by itself)."""

    _nc: Any = None
    _js: Any = None
    _sub: Any = None

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
            for msg in batch:
                yield Incoming(msg.data, MARKER in (msg.headers or {}), msg.ack)

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._js = self._sub = None
