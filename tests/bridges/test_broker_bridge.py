"""broker-bridge against the real brokers: in, out, no loops, foreign payloads dead-lettered.

Each test maps one fresh external name (a uuid in it) both ways to one fresh topic on a
bridge node, with a sink node handling the topic: a plain client's publish reaches the
sink; the sink's publish reaches a plain subscriber once, marked, and never comes back
into p2phost; a payload that is not JSON lands in the bridge node's dead letters.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from p2phost_sdk import Identity
from tests.bridges.conftest import BridgeApp, BridgeSettings, eventually, node
from tests.bridges.plain import BROKERS, plain_client

pytestmark = pytest.mark.services


@pytest.mark.parametrize("key", list(BROKERS))
async def test_both_ways_without_loops_and_foreign_payloads_dead_lettered(
        key: str, bridge_pair: Any) -> None:
    broker = BROKERS[key]
    name, topic = broker.unique_name(), f"orders-{uuid.uuid4().hex[:8]}"
    inbound = broker.mapping("in", name, topic)
    outbound = broker.mapping("out", name, topic)
    async with plain_client(broker, inbound) as plain:
        pair = await bridge_pair({"mappings": {"in": inbound, "out": outbound}}, [topic],
                                 broker.acknowledged)
        await eventually("the bridge to subscribe", lambda: pair.app.counts is not None and
                         _subscribed(pair))
        await plain.subscribe()

        await plain.publish(json.dumps({"n": 1}).encode())
        await eventually("the sink to get the broker's message",
                         lambda: pair.sink_app.bodies() == [{"n": 1}])

        assert await pair.sink.publish(topic, {"n": 2}) == 1
        await eventually("the plain subscriber to get the node's message",
                         lambda: {"n": 2} in _decoded(plain.seen.payloads()))
        await eventually("the bridge to drop its own message coming back",
                         lambda: pair.app.counts.looped == 1)

        await plain.publish(b"not json {")
        await eventually("the foreign payload in the dead letters",
                         lambda: len(pair.dead_letters()) == 1)
        await asyncio.sleep(0.3)  # time for a loop to show, were there one
    assert pair.sink_app.bodies() == [{"n": 1}], "a bridged message came back"
    peer, dead_topic, body, reason = pair.dead_letters()[0]
    assert (dead_topic, body) == (topic, b"not json {")
    assert name in peer and "does not decode" in reason
    marks = [marked for payload, marked in plain.seen.items if _decoded([payload]) == [{"n": 2}]]
    assert len(marks) == 1
    if key not in ("redis-channel", "postgres"):  # media without headers
        assert marks == [True]
    assert pair.app.counts.bridged_in == 1 and pair.app.counts.bridged_out == 1


def _subscribed(pair: Any) -> bool:
    return any(id(e) in pair.app._opened for m, e in pair.app._endpoints if m.direction == "in")


def _decoded(payloads: list[bytes]) -> list[Any]:
    found = []
    for payload in payloads:
        try:
            found.append(json.loads(payload))
        except ValueError:
            found.append(payload)
    return found


async def test_a_message_one_bridge_brought_in_is_not_taken_back_by_another() -> None:
    """Origin tracking on the p2phost side: bridge X maps a Redis channel (no headers) in
    to a topic; bridge Y maps the topic out to that same channel and to a second one. Y
    takes the message out to the second channel only."""
    broker = BROKERS["redis-channel"]
    name, topic = broker.unique_name(), f"orders-{uuid.uuid4().hex[:8]}"
    inbound = broker.mapping("in", name, topic)
    back = broker.mapping("out", name, topic)
    onward = broker.mapping("out", name + "-copy", topic)
    x_id, y_id = Identity.generate(), Identity.generate()
    x_app = BridgeApp(BridgeSettings.from_config({"mappings": {"in": inbound}}),
                      peer_id=x_id.peer_id)
    y_app = BridgeApp(BridgeSettings.from_config({"mappings": {"back": back,
                                                               "onward": onward}}),
                      peer_id=y_id.peer_id)
    x, y = node([x_app], identity=x_id), node([y_app], identity=y_id)
    async with plain_client(broker, inbound) as plain, plain_client(broker, onward) as copy:
        await plain.subscribe()
        await copy.subscribe()
        try:
            for n in (x, y):
                await n.start()
            await y.connect(x.addresses[0])
            await eventually("X to see Y", lambda: any(topic in p.topics for p in x.peers()))
            await eventually("X to subscribe", lambda: any(
                id(e) in x_app._opened for _, e in x_app._endpoints))
            await plain.publish(b'{"n": 1}')
            await eventually("Y to take it onward", lambda: len(copy.seen.items) == 1)
            await asyncio.sleep(0.3)  # time for a loop to show, were there one
        finally:
            for n in (y, x):
                await n.close()
    assert (x_app.counts.bridged_in, y_app.counts.looped, y_app.counts.bridged_out) == (1, 1, 1)
    assert plain.seen.payloads() == [b'{"n": 1}'], "it was bridged back"


async def test_a_payload_too_large_for_the_node_is_dead_lettered_and_the_rest_go_on(
        bridge_pair: Any) -> None:
    """A payload over the node's frame limit is dead-lettered, not held (an acknowledged
    mapping would otherwise stall on it), and the next one passes."""
    broker = BROKERS["redis-stream"]
    name, topic = broker.unique_name(), f"raw-{uuid.uuid4().hex[:8]}"
    inbound = broker.mapping("in", name, topic, codec="text")
    async with plain_client(broker, inbound) as plain:
        pair = await bridge_pair({"mappings": {"in": inbound}}, [topic], True)
        await eventually("the bridge to subscribe", lambda: _subscribed(pair))
        await plain.publish(b"x" * (2 << 20))  # 2 MiB: over the 1 MiB frames here
        await plain.publish(b"small")
        await eventually("the next one to pass", lambda: pair.sink_app.bodies() == ["small"])
        await eventually("the big one in the dead letters", lambda: len(pair.dead_letters()) == 1)
    assert "too large" in pair.dead_letters()[0][3]


async def test_an_acknowledged_out_mapping_does_not_take_a_message_the_broker_refused(
        bridge_pair: Any) -> None:
    """The reverse of an acknowledged in mapping: the bridge acknowledges a p2phost message
    only once the broker has it; with the broker unreachable the message is retried, then
    kept in the bridge node's dead letters (never acknowledged and lost)."""
    topic = f"receipts-{uuid.uuid4().hex[:8]}"
    outbound = {"direction": "out", "broker": "redis://127.0.0.1:1/0", "kind": "stream",
                "name": "nowhere", "topic": topic, "acknowledged": True}
    pair = await bridge_pair({"mappings": {"out": outbound}, "timeout": 2.0}, [], False)
    await eventually("the sink to see the bridge's topic",
                     lambda: any(topic in p.topics for p in pair.sink.peers()))
    assert await pair.sink.publish(topic, {"n": 1}) == 1
    await eventually("the message in the bridge's dead letters",
                     lambda: len(pair.dead_letters()) == 1, timeout=30)
    _, dead_topic, body, reason = pair.dead_letters()[0]
    assert dead_topic == topic and json.loads(body) == {"n": 1}
    assert "failed all" in reason, reason
    assert pair.app.counts.bridged_out == 0


async def test_a_huge_foreign_payload_keeps_at_most_a_frame_in_the_dead_letters(
        tmp_path: Path) -> None:
    """A broker entry can be far larger than a message: what the store keeps is bounded."""
    bridge = node([], tmp_path)
    await bridge.start()
    try:
        letter = await bridge.dead_letter("t", b"x" * (3 << 20), source="redis://h/0 s",
                                          reason="not JSON")
    finally:
        await bridge.close()
    assert letter > 0
    with sqlite3.connect(tmp_path / "delivery.db") as db:
        body, reason = db.execute("SELECT body, reason FROM dead").fetchone()
    assert len(body) == 1 << 20
    assert reason == f"not JSON (first {1 << 20} of {3 << 20} bytes kept)"
