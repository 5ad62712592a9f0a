"""mqtt-transport passes the SDK transport conformance kit on the real Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2phost_sdk import Connection, Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance, receive
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("mqtt-transport")

from p2phost_mqtt_transport import MqttTransport  # noqa: E402

URL = "mqtt://127.0.0.1:1883"


class TestMqttTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self, tmp_path: Path) -> TransportCase:
        service_or_skip("Mosquitto", 1883)
        return TransportCase(
            make=lambda limit: MqttTransport(peer_id=Identity.generate().peer_id,
                                             max_frame_size=limit, state_dir=tmp_path),
            listen_address=lambda: URL,
            unreachable_address=f"mqtt://127.0.0.1:1#{Identity.generate().peer_id}",
            bad_address="mqtt://127.0.0.1:1883/a/path",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )


def test_a_reply_inboxs_packet_ids_count_with_their_connection() -> None:
    """A clean session (a reply inbox) numbers its packets afresh after a reconnect: the
    same packet id on another connection is another message, not a redelivery. In a
    persistent session (a node's inbox) it is the same message."""
    transport = MqttTransport(peer_id=Identity.generate().peer_id)
    medium = transport.make_medium(transport.parse("mqtt://127.0.0.1:1883"))
    lost, live = object(), object()
    medium._persistent = False  # type: ignore[attr-defined]
    assert medium.record_of((lost, 1, False, 5, 0)) != medium.record_of((live, 1, False, 5, 0))
    assert medium.record_of((live, 1, False, 5, 0)) == medium.record_of((live, 1, True, 9, 0))
    medium._persistent = True  # type: ignore[attr-defined]
    assert medium.record_of((lost, 1, False, 5, 0)) == medium.record_of((live, 1, False, 5, 0))


async def test_a_busy_node_loses_nothing_its_connections_windows_let_pile_up(
        tmp_path: Path) -> None:
    """Five connections each fill their window (250 of 256 frames) while the node takes
    none: 1,250 records wait for a running node, past Mosquitto's queue per session
    (max_queued_messages, 1,000, beyond the 20 it hands a 3.1.1 reader at once). The
    broker dropped the excess silently, and those connections waited for ever for frames
    that never came (test_many_connections_at_once, 20 x 50 frames: under load)."""
    service_or_skip("Mosquitto", 1883)
    transport = MqttTransport(peer_id=Identity.generate().peer_id, state_dir=tmp_path)
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    listener = await transport.listen(URL, accepted.put)
    clients: list[Connection] = []
    try:
        async with asyncio.timeout(30):
            clients = [await transport.dial(listener.addresses[0], timeout=10)
                       for _ in range(5)]
            servers = [await accepted.get() for _ in clients]
            sent = [f"{n}".encode() * 8 for n in range(250)]
            # Each returns once the broker has every record (QoS 1): all 1,250 wait there.
            await asyncio.gather(*(client.send_many(sent) for client in clients))
            for server in servers:
                assert [await receive(server) for _ in sent] == sent
    finally:
        for client in clients:
            await client.close()
        await listener.close()
        await transport.close()
