"""quic-transport: the transport kit, bounded buffers, and what a listener refuses."""

from __future__ import annotations

import pytest

from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.discovery.plugins import use_plugin_source

use_plugin_source("quic-transport")

from p2phost_quic_transport import QuicTransport  # noqa: E402

TIMEOUT = 10.0


class TestQuicTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self) -> TransportCase:
        return TransportCase(
            make=lambda limit: QuicTransport(max_frame_size=limit),
            listen_address=lambda: "quic://127.0.0.1:0",
            unreachable_address="quic://127.0.0.1:1",
            bad_address="quic://127.0.0.1:notaport",
        )
