"""A JetStream message the bridge holds longer than ``redeliver-after`` reaches the
p2phost topic once: the bridge keeps the batch in hand in progress (``+WPI``), and skips
a copy of what it acknowledged already.

Scaled down: ``redeliver-after`` is 0.4 s, and the time under test is 2 s (five ack
waits). Without ``+WPI`` the server has a held message ready again: the next fetch
brings its copy.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from pathlib import Path

import pytest
from p2phost_broker_bridge._endpoint import EchoFilter, make_endpoint

from p2phost._runtime import Node
from p2phost_sdk import Identity
from tests.bridges.conftest import BridgeApp, BridgeSettings, Sink, eventually, node
from tests.bridges.plain import BROKERS, plain_client

pytestmark = pytest.mark.services
REDELIVER_AFTER = 0.4
#: The time under test: how long the bridge holds a round's messages before a peer comes.
HELD = 5 * REDELIVER_AFTER
ROUNDS, PER_ROUND = 3, 5
COUNT = ROUNDS * PER_ROUND


async def test_a_message_in_hand_is_kept_in_progress() -> None:
    """The endpoint alone: a message taken and not acknowledged for five ack waits is
    not what the next fetch brings (without ``+WPI``, its copy is)."""
    broker = BROKERS["jetstream"]
    inbound = broker.mapping("in", broker.unique_name(), "t",
                             **{"redeliver-after": REDELIVER_AFTER})
    mapping = BridgeSettings.from_config({"mappings": {"in": inbound}}).mappings[0]
    endpoint = make_endpoint(mapping, Identity.generate().peer_id, timeout=5.0, queue=8,
                             echo=EchoFilter())
    async with plain_client(broker, inbound) as plain:
        await endpoint.open()
        try:
            messages = aiter(endpoint.receive())
            taking = asyncio.ensure_future(anext(messages))
            await plain.publish(b'{"n": 0}')
            first = await asyncio.wait_for(taking, 10)
            await asyncio.sleep(HELD)
            with pytest.raises(TimeoutError):  # the next fetch finds nothing
                copy = await asyncio.wait_for(anext(messages), 2.5)
                pytest.fail(f"delivered again while in hand: {copy.payload!r}")
            assert first.ack is not None
            await first.ack()
        finally:
            await endpoint.close()


async def test_messages_held_past_redeliver_after_are_forwarded_once(tmp_path: Path) -> None:
    """The bridge: while no peer handles the topic, the acknowledged mapping holds what it
    fetched; in three rounds, messages are published and held, then taken by a sink node
    that connects and goes away before the next round. Without ``+WPI`` the bridge's
    next fetch usually overtakes the held message's late ack and brings its copy (a race:
    three rounds make a miss unlikely). The server's count (consumer sequence against
    stream sequence) is in the failure message."""
    broker = BROKERS["jetstream"]
    name, topic = broker.unique_name(), f"orders-{uuid.uuid4().hex[:8]}"
    inbound = broker.mapping("in", name, topic, **{"redeliver-after": REDELIVER_AFTER})
    identity = Identity.generate()
    app = BridgeApp(BridgeSettings.from_config({"mappings": {"in": inbound}}),
                    peer_id=identity.peer_id)
    bridge = node([app], tmp_path, identity)
    got: list[int] = []
    async with plain_client(broker, inbound) as plain:
        try:
            await bridge.start()
            await eventually("the bridge to subscribe",
                             lambda: any(id(e) in app._opened for _, e in app._endpoints))
            for first in range(0, COUNT, PER_ROUND):
                numbers = range(first, first + PER_ROUND)
                for n in numbers:
                    await plain.publish(json.dumps({"n": n}).encode())
                await asyncio.sleep(HELD)
                got += await _taken_by_a_sink(bridge, topic, set(numbers))
            durable = app.settings.mappings[0].durable_name(identity.peer_id)
            info = await plain.js.consumer_info(inbound["stream"], durable)
        finally:
            await bridge.close()
    twice = sorted(n for n, c in collections.Counter(got).items() if c > 1)
    assert twice == [], f"forwarded twice or more: {twice} (the server delivered " \
        f"{info.delivered.stream_seq} messages {info.delivered.consumer_seq} times)"
    assert sorted(got) == list(range(COUNT))


async def _taken_by_a_sink(bridge: Node, topic: str, numbers: set[int]) -> list[int]:
    """A sink node connects, takes ``numbers`` (and any copy) and goes away: the ``n``
    of each message it got."""
    sink_app = Sink([topic], acknowledged=True)
    sink = node([sink_app])
    await sink.start()
    try:
        await sink.connect(bridge.addresses[0])
        await eventually("the round at the sink", lambda: {
            b["n"] for b in sink_app.bodies()} >= numbers, timeout=20)
        await asyncio.sleep(3 * REDELIVER_AFTER)  # for a copy to come, were there one
    finally:
        await sink.close()
    await eventually("the bridge to see the sink go",
                     lambda: not any(topic in p.topics for p in bridge.peers()))
    return [b["n"] for b in sink_app.bodies()]
