"""mqtt-transport passes the SDK transport conformance kit on the real Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2phost_sdk import Connection, Identity
from p2phost_sdk.inbox import InboxFull
from p2phost_sdk.testing.transport import TransportCase, TransportConformance, receive
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("mqtt-transport")

from p2phost_mqtt_transport import MqttTransport  # noqa: E402
from p2phost_mqtt_transport._counts import marker  # noqa: E402
from p2phost_mqtt_transport._medium import MqttMedium  # noqa: E402

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


async def test_senders_claiming_places_at_once_do_not_refuse_each_other() -> None:
    """Three senders storing into an absent node's inbox (max-messages 30) each claim
    the room they see (29 places) before any sees another's claim. Each then saw the
    others' claims fill the inbox and was refused after one letter: 3 stored of 30
    (test_retention's three sender processes, under load). The claim the broker took
    first stands; the later ones give way to it."""
    service_or_skip("Mosquitto", 1883)
    transport = MqttTransport(peer_id=Identity.generate().peer_id)
    name = Identity.generate().peer_id

    def medium() -> MqttMedium:
        made = transport.make_medium(transport.parse(URL))
        assert isinstance(made, MqttMedium)
        made._peer_id = Identity.generate().peer_id  # type: ignore[attr-defined]
        return made

    owner, senders = medium(), [medium() for _ in range(3)]
    for each in (owner, *senders):
        await each.connect()
    try:
        await owner.create_inbox(name)
        await owner._mark(name, marker(30))  # type: ignore[attr-defined]
        for sender in senders:  # each has seen the inbox empty, and nobody's claim
            assert (await sender._look(name)).waiting(0).n == 0  # type: ignore[attr-defined]
        stored = [0, 0, 0]

        async def fill(k: int) -> None:
            while stored[k] < 40:
                try:
                    await senders[k].store(name, [f"{k}:{stored[k]}".encode()])
                except InboxFull:
                    return
                stored[k] += 1

        # Started together, the three first stores claim before any claim comes back.
        async with asyncio.timeout(30):
            await asyncio.gather(*(fill(k) for k in range(3)))
        assert 30 <= sum(stored) <= 32, stored
    finally:
        for each in senders:
            await each.close(delete_inbox=False)
        await owner.delete_inbox(name)
        await owner.close(delete_inbox=False)
