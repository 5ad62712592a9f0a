"""Admission under a flood of connections that never say hello: handshakes in progress
are bounded apart from [node] peer-limit, sources are grouped by prefix (a broker
medium's by the dialler's inbox), and a full node makes room for a newcomer from a less
crowded network or source (docs/operations.md, "Connection limits and refusals")."""

from __future__ import annotations

import asyncio
import time

import pytest
from recorder_app import Recorder

from p2phost._runtime import Node, NodeOptions
from p2phost._runtime.node._admission import HandshakeGate, Pending, source_of
from p2phost_sdk import App, Identity
from p2phost_sdk.testing.discovery import wait_until
from tests.brokers.test_inbox_unit import Broker, transport
from tests.discovery.plugins import use_plugin_source

for _name in ("tcp-transport", "json-codec", "noise-security"):
    use_plugin_source(_name)

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402

#: Sockets each flooding source holds open (handshake-limit-per-source's default).
SOCKETS = 8
#: How long the flood lasts at most.
FLOOD_SECONDS = 10.0


def _node(security: str, apps: list[App], listen: list[str]) -> Node:
    """A node over tcp with the default limits, secured by noise or not."""
    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/json": JsonCodec()},
                security=[NoiseSecurity()] if security == "noise" else [], apps=apps,
                options=NodeOptions(listen=listen))


async def _hold(source: str, port: int, until: float) -> None:
    """One silent socket from ``source``, reopened each time the node closes it."""
    while time.monotonic() < until:
        try:
            async with asyncio.timeout(max(0.1, until - time.monotonic())):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0))
                try:
                    await reader.read()  # until the node closes it (with or without a word)
                finally:
                    writer.close()
        except (TimeoutError, OSError):
            pass


@pytest.mark.parametrize("sources", [
    # 16 hosts in four /24s: 128 sockets, every handshake the node takes at once.
    [f"127.1.{n}.{m}" for n in range(1, 5) for m in range(1, 5)],
    # 16 hosts in the dialler's own /24 (127.0.0.1): the node is full with its network.
    [f"127.0.0.{m}" for m in range(2, 18)],
], ids=["16-hosts-4-networks", "16-hosts-dialler-network"])
@pytest.mark.parametrize("security", ["plain", "noise"])
async def test_a_peer_gets_in_while_silent_sockets_flood_the_handshakes(
        sources: list[str], security: str) -> None:
    server = _node(security, [Recorder()], ["tcp://127.0.0.1:0"])
    client = _node(security, [], [])
    await server.start()
    await client.start()
    port = int(server.addresses[0].rsplit(":", 1)[1])
    until = time.monotonic() + FLOOD_SECONDS
    flood = [asyncio.create_task(_hold(s, port, until)) for s in sources for _ in range(SOCKETS)]
    try:
        def taken() -> bool:  # every socket of the flood held in its handshake, or refused
            stats = server.stats()["connections"]
            return bool(stats["handshaking"] >= 32
                        and stats["handshaking"] + stats["refused"] >= len(flood))

        await wait_until(taken, 5, "the node takes the flood's sockets")
        # The legitimate peer's hello takes milliseconds: it gets in, and is served.
        async with asyncio.timeout(5):
            peer = await client.connect(server.addresses[0])
            assert await client.request(peer, "record", 1) == 1
        stats = server.stats()["connections"]
        assert stats["peers"] == 1
        assert stats["handshaking"] <= 128
    finally:
        for task in flood:
            task.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
        await client.close()
        await server.close()


def _gate(total: int = 128, per_source: int = 8) -> tuple[HandshakeGate, list[Pending]]:
    evicted: list[Pending] = []
    return HandshakeGate(total=total, per_source=per_source, evict=evicted.append), evicted


def test_sources_group_an_ipv6_64_and_networks_an_ipv4_24_and_an_ipv6_48() -> None:
    assert source_of("tcp://203.0.113.5:7400") == ("203.0.113.5", "203.0.113.0/24")
    assert source_of("tcp://[2001:db8:1:2::7]:7400") == ("2001:db8:1:2::/64",
                                                         "2001:db8:1::/48")
    assert source_of("ws://[2001:db8:1:2:ffff::1]:80/p2p") == ("2001:db8:1:2::/64",
                                                              "2001:db8:1::/48")
    assert source_of("tcp://[::ffff:203.0.113.5]:7400") == ("203.0.113.5", "203.0.113.0/24")
    assert source_of("relay+tcp://203.0.113.5:7400/p2p-circuit/PEER")[0] == "203.0.113.5"
    assert source_of("mem://node-1/a") == ("node-1/a", "node-1/a")


def test_peers_on_one_broker_are_sources_of_their_own_in_the_broker_network() -> None:
    # Every peer reaching this node through a broker connects from the broker's host:
    # by the host they would be one source, and 8 handshakes at once would fill it.
    a = source_of("mqtt://broker:1883#peerA", inbox=True)
    b = source_of("mqtt://broker:1883#peerB", inbox=True)
    assert a == ("mqtt://broker:1883#peerA", "mqtt://broker:1883")
    assert b[0] != a[0] and b[1] == a[1]


def test_nine_peers_handshaking_through_one_broker_are_all_admitted() -> None:
    gate, evicted = _gate()
    entries = [gate.enter(f"mqtt://broker:1883#peer{n}", inbox=True) for n in range(9)]
    assert all(isinstance(e, Pending) for e in entries) and not evicted
    # One inbox is a source of its own: its ninth handshake is refused.
    for _ in range(7):
        assert isinstance(gate.enter("mqtt://broker:1883#peer0", inbox=True), Pending)
    assert gate.enter("mqtt://broker:1883#peer0", inbox=True) == \
        "too many handshakes in progress from mqtt://broker:1883#peer0 (8)"


async def test_peers_dialling_through_one_broker_at_once_all_get_in() -> None:
    # One handshake per source: counted by the broker's host, the second is refused.
    broker = Broker()

    def on_broker(apps: list[App], listen: list[str]) -> Node:
        identity = Identity.generate()
        return Node(identity, transports={"fake": transport(broker, peer_id=identity.peer_id)},
                    codecs={"application/json": JsonCodec()}, apps=apps,
                    options=NodeOptions(listen=listen, handshake_limit_per_source=1))

    server = on_broker([Recorder()], ["fake://medium"])
    clients = [on_broker([], []) for _ in range(3)]
    for node in (server, *clients):
        await node.start()
    try:
        async with asyncio.timeout(10):
            peers = await asyncio.gather(*(c.connect(server.addresses[0]) for c in clients))
            answers = [await c.request(p, "record", 1) for c, p in zip(clients, peers, strict=True)]
            assert answers == [1] * 3
        assert server.stats()["connections"]["refused"] == 0
    finally:
        for node in (*clients, server):
            await node.close()


def test_one_ipv6_64_is_one_source() -> None:
    gate, _ = _gate()
    for i in range(8):
        assert isinstance(gate.enter(f"tcp://[2001:db8:1:2::{i + 1:x}]:5"), Pending)
    # A ninth address of the same /64 is refused, another /64 is not.
    assert gate.enter("tcp://[2001:db8:1:2:aaaa::1]:5") == \
        "too many handshakes in progress from 2001:db8:1:2::/64 (8)"
    assert isinstance(gate.enter("tcp://[2001:db8:1:3::1]:5"), Pending)
    assert len(gate) == 9


def test_forty_peers_of_one_lan_handshaking_at_once_do_not_evict_each_other() -> None:
    # A hub restarts and a cluster on one /24 (a Docker network) dials it back at once:
    # a network counts only when the node is full.
    gate, evicted = _gate()
    entries = [gate.enter(f"tcp://10.0.0.{n}:40000") for n in range(1, 41)]
    assert all(isinstance(e, Pending) for e in entries) and not evicted and not gate.refused


def test_a_full_node_makes_room_in_the_most_crowded_network_first() -> None:
    gate, evicted = _gate(total=16, per_source=8)
    # A /24 of 10 hosts holding 1 each, and one host of another /24 holding 6.
    spread = [gate.enter(f"tcp://10.0.1.{n}:5") for n in range(1, 11)]
    host = [gate.enter("tcp://10.0.2.1:5") for _ in range(6)]
    assert len(gate) == 16
    # The crowded network loses its oldest, though the other holds the crowded source.
    assert isinstance(gate.enter("tcp://10.0.3.1:5"), Pending)
    assert evicted == [spread[0]] and evicted[0].evicted == "too many handshakes in " \
                                                            "progress (16)"
    assert host[0] not in evicted


def test_a_newcomer_alone_in_its_network_keeps_its_place_against_rotating_sources() -> None:
    # 128 sources in 4 IPv6 /48s (32 /64s each), one silent handshake each: the node is
    # full. A legitimate dialler gets in (the oldest attacker loses its place) ...
    gate, evicted = _gate()
    for net in range(4):
        for sub in range(32):
            assert isinstance(gate.enter(f"tcp://[2001:db8:{net}:{sub}::1]:1"), Pending)
    legit = gate.enter("tcp://198.51.100.7:4001")
    assert isinstance(legit, Pending) and len(evicted) == 1
    # ... and keeps it while the attacker opens connections from fresh /64s: they only
    # take each other's places, the networks holding more going first.
    for n in range(512):
        gate.enter(f"tcp://[2001:db8:{n % 4}:{100 + n}::1]:1")
    assert legit not in evicted and len(gate) == 128


def test_a_full_node_makes_room_for_a_new_source_and_refuses_the_crowding_one() -> None:
    gate, evicted = _gate(total=16, per_source=8)
    held = [gate.enter(f"tcp://10.0.{n}.1:5") for n in (1, 2) for _ in range(7)]
    held += [gate.enter("tcp://10.0.3.1:5"), gate.enter("tcp://10.0.3.1:5")]
    assert len(gate) == 16
    assert isinstance(gate.enter("tcp://10.0.4.1:5"), Pending)
    assert evicted == [held[0]]  # the oldest of the two sources holding 7
    assert isinstance(gate.enter("tcp://10.0.4.1:5"), Pending)
    assert evicted[1] is held[7]  # now the other one holds most
    # A source holding as many as the most crowded one is refused.
    assert gate.enter("tcp://10.0.1.1:5") == "too many handshakes in progress (16)"
    assert len(gate) == 16 and gate.evicted == 2 and gate.refused == 1


def test_leaving_frees_the_place() -> None:
    gate, _ = _gate(total=2, per_source=2)
    first, second = gate.enter("tcp://10.0.0.1:5"), gate.enter("tcp://10.0.0.1:5")
    assert isinstance(first, Pending) and isinstance(second, Pending)
    assert gate.enter("tcp://10.0.0.1:5") == "too many handshakes in progress from " \
                                             "10.0.0.1 (2)"
    gate.leave(first)
    gate.leave(first)  # twice: nothing more
    assert len(gate) == 1 and isinstance(gate.enter("tcp://10.0.0.1:5"), Pending)
