"""mqtt-transport passes the SDK transport conformance kit on the real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost_sdk import Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
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
