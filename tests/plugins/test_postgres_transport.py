"""postgres-transport passes the SDK transport conformance kit on the real PostgreSQL."""

from __future__ import annotations

import asyncio
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


async def test_a_node_connects_while_another_holds_a_transaction_on_the_tables(
        tmp_path: Path) -> None:
    # Another node's store transaction in progress (a row lock on the inbox table): a node
    # starting meanwhile must not queue behind it, nor make everyone queue behind itself.
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    peer_id = Identity.generate().peer_id
    transport = PostgresTransport(peer_id=peer_id, max_frame_size=1 << 20, state_dir=tmp_path)
    listener = await transport.listen(URL, lambda connection: None)  # type: ignore[arg-type,return-value]
    await listener.close()
    other = await psycopg.AsyncConnection.connect(URL)
    try:
        cursor = await other.execute("SELECT name FROM p2phost_inboxes WHERE name = %s "
                                     "FOR UPDATE", (peer_id,))
        assert await cursor.fetchall() == [(peer_id,)]
        late = PostgresTransport(peer_id=Identity.generate().peer_id, max_frame_size=1 << 20,
                                 state_dir=tmp_path / "late")
        async with asyncio.timeout(10):
            listener = await late.listen(URL, lambda connection: None)  # type: ignore[arg-type,return-value]
        await listener.close()
        await late.close()
    finally:
        await other.rollback()
        await other.close()
        await transport.close()
