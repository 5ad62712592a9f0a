"""nats-transport passes the SDK transport conformance kit on the real NATS, core and
JetStream."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost_sdk import Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("nats-transport")

from p2phost_nats_transport import NatsTransport  # noqa: E402

URL = "nats://127.0.0.1:4222"


class TestNatsTransport(TransportConformance):
    @pytest.fixture(params=["core", "jetstream"])
    def transport_case(self, request: pytest.FixtureRequest, tmp_path: Path) -> TransportCase:
        service_or_skip("NATS", 4222)
        durable = request.param == "jetstream"
        return TransportCase(
            make=lambda limit: NatsTransport(peer_id=Identity.generate().peer_id,
                                             max_frame_size=limit, state_dir=tmp_path,
                                             durable=durable),
            listen_address=lambda: URL,
            unreachable_address=f"nats://127.0.0.1:1#{Identity.generate().peer_id}",
            bad_address="nats://127.0.0.1:4222/a/path",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )
