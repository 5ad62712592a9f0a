"""postgres-transport passes the SDK transport conformance kit on the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost_sdk import Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("postgres-transport")

from p2phost_postgres_transport import PostgresTransport  # noqa: E402

URL = "postgresql://127.0.0.1:5432/test"


class TestPostgresTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self, tmp_path: Path) -> TransportCase:
        service_or_skip("PostgreSQL", 5432)
        return TransportCase(
            make=lambda limit: PostgresTransport(peer_id=Identity.generate().peer_id,
                                             max_frame_size=limit, state_dir=tmp_path),
            listen_address=lambda: URL,
            unreachable_address=f"postgresql://127.0.0.1:1/test#{Identity.generate().peer_id}",
            bad_address="postgresql://127.0.0.1:5432",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )
