"""amqp-transport passes the SDK transport conformance kit on the real RabbitMQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost_sdk import Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("amqp-transport")

from p2phost_amqp_transport import AmqpTransport  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/"


class TestAmqpTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self, tmp_path: Path) -> TransportCase:
        service_or_skip("RabbitMQ", 5672)
        return TransportCase(
            make=lambda limit: AmqpTransport(peer_id=Identity.generate().peer_id,
                                             max_frame_size=limit, state_dir=tmp_path),
            listen_address=lambda: URL,
            unreachable_address=f"amqp://127.0.0.1:1/#{Identity.generate().peer_id}",
            bad_address="amqp://127.0.0.1:notaport/",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )
