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


async def test_credits_come_with_their_notification_and_junk_there_is_ignored() -> None:
    """A small window needs a credit every few frames: each comes in its notification's
    payload as well as in its row. Payloads that are not records (anyone who may NOTIFY
    on the channel) are ignored, and every frame arrives once, in order."""
    import psycopg
    from p2phost_postgres_transport import notify_channel

    from p2phost_sdk.inbox import InboxOptions
    from p2phost_sdk.testing.transport import TransportKit

    service_or_skip("PostgreSQL", 5432)
    make = lambda limit: PostgresTransport(  # noqa: E731
        peer_id=Identity.generate().peer_id, max_frame_size=limit,
        options=InboxOptions(window=4))
    case = TransportCase(make=make, listen_address=lambda: URL, unreachable_address="",
                         bad_address="", unknown_peer_address="")
    frames = [n.to_bytes(4, "big") for n in range(200)]
    noise = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    try:
        async with TransportKit(case).pair() as (client, server):
            # The dialler's inbox (where the credits go) and the listener's.
            inboxes = [c._endpoint.inbox for c in (client, server)]  # type: ignore[attr-defined]

            async def junk() -> None:
                while True:
                    for inbox in inboxes:
                        for payload in ("not hex", "00ff", "70327049" + "00" * 60):
                            await noise.execute("SELECT pg_notify(%s, %s)",
                                                (notify_channel(inbox), payload))
                    await asyncio.sleep(0.01)

            noising = asyncio.ensure_future(junk())
            try:
                async with asyncio.timeout(60):
                    sending = asyncio.ensure_future(client.send_many(frames))
                    got = [bytes(await server.recv()) for _ in frames]
                    await sending
            finally:
                noising.cancel()
                await asyncio.gather(noising, return_exceptions=True)
            assert got == frames
    finally:
        await noise.close()


async def test_a_notification_payload_carries_no_frame_into_a_connection() -> None:
    """NOTIFY needs no privilege on the tables: a role that may only connect to the
    database must not put a frame into a node's connection through a payload (only
    credits travel there)."""
    import psycopg
    from p2phost_postgres_transport import notify_channel

    from p2phost_sdk.inbox._record import Record, RecordType
    from p2phost_sdk.testing.transport import TransportKit

    service_or_skip("PostgreSQL", 5432)
    case = TransportCase(make=lambda limit: PostgresTransport(
        peer_id=Identity.generate().peer_id, max_frame_size=limit),
        listen_address=lambda: URL, unreachable_address="", bad_address="",
        unknown_peer_address="")
    intruder = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    try:
        async with TransportKit(case).pair() as (client, server), asyncio.timeout(30):
            await client.send(b"genuine 1")
            assert bytes(await server.recv()) == b"genuine 1"
            inbox = server._endpoint.inbox  # type: ignore[attr-defined]
            for seq in (server._next, server._next + 1):  # type: ignore[attr-defined]
                forged = Record(RecordType.DATA, True, server.connection_id,  # type: ignore[attr-defined]
                                server.in_epoch, seq, server.remote_peer_id,  # type: ignore[attr-defined]
                                b"forged").encode()
                await intruder.execute("SELECT pg_notify(%s, %s)",
                                       (notify_channel(inbox), forged.hex()))
            await asyncio.sleep(0.3)
            await client.send_many([b"genuine 2", b"genuine 3"])
            assert [bytes(await server.recv()) for _ in range(2)] == [b"genuine 2",
                                                                      b"genuine 3"]
    finally:
        await intruder.close()


async def test_a_claim_of_large_rows_holds_one_large_body_at_a_time() -> None:
    """A claim takes up to 512 rows: anyone who may insert rows into a node's inbox must
    not make one claim bring 512 large bodies into the node's memory at once (large
    bodies come one by one as they are delivered)."""
    import psycopg
    from p2phost_postgres_transport import notify_channel

    service_or_skip("PostgreSQL", 5432)
    peer_id = Identity.generate().peer_id
    # 4 MiB bodies are under its limit: read (a larger one is refused unread).
    transport = PostgresTransport(peer_id=peer_id, max_frame_size=8 << 20)
    listener = await transport.listen(URL, lambda connection: None)  # type: ignore[arg-type,return-value]
    (endpoint,) = transport._endpoints.values()  # type: ignore[attr-defined]
    intruder = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    try:
        # Swap the reader's callback: restart the reading with the measuring one.
        medium = endpoint.medium
        medium._reader.cancel()
        await asyncio.gather(medium._reader, return_exceptions=True)
        bodies = [bytes([n]) * (4 << 20) for n in range(24)]  # 96 MiB, not records
        await intruder.execute("INSERT INTO p2phost_inbox_records (inbox, body) "
                               "SELECT %s, unnest(%s::bytea[])", (peer_id, bodies))
        sizes: list[int] = []
        all_in = asyncio.Event()

        async def measure(data: bytes, token: object) -> None:
            sizes.append(_rss_mib())
            await endpoint._router.deliver(data, token)
            if len(sizes) == len(bodies):
                all_in.set()

        base = _rss_mib()
        medium._reader = asyncio.get_running_loop().create_task(
            medium._read(await medium._listen(), measure))
        await intruder.execute("SELECT pg_notify(%s, '')", (notify_channel(peer_id),))
        await asyncio.wait_for(all_in.wait(), 60)
        assert max(sizes) - base < 48, (
            f"the node's RSS grew by {max(sizes) - base} MiB while delivering 24 rows of "
            "4 MiB (all of them held at once)")
    finally:
        await intruder.close()
        await listener.close()
        await transport.close()


def _rss_mib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


@pytest.mark.parametrize("early", [True, False], ids=["flushed-after", "flushed-with"])
async def test_frames_arrive_in_order_whether_or_not_the_role_may_flush_apart(
        early: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends make frames visible at once and then wait for the WAL flush (FLUSH); a
    role that may not run FLUSH's function appends them flushed, in one statement."""
    from p2phost_postgres_transport import _medium

    from p2phost_sdk.testing.transport import TransportKit

    service_or_skip("PostgreSQL", 5432)
    if not early:
        monkeypatch.setattr(_medium, "CAN_FLUSH", "SELECT false")
    case = TransportCase(make=lambda limit: PostgresTransport(
        peer_id=Identity.generate().peer_id, max_frame_size=limit),
        listen_address=lambda: URL, unreachable_address="", bad_address="",
        unknown_peer_address="")
    frames = [n.to_bytes(4, "big") for n in range(700)]  # several windows
    async with TransportKit(case).pair() as (client, server), asyncio.timeout(60):
        assert client._endpoint.medium._early is early  # type: ignore[attr-defined]
        sending = asyncio.ensure_future(client.send_many(frames))
        got = [bytes(await server.recv()) for _ in frames]
        await sending
    assert got == frames


async def test_a_flush_refused_midway_is_retried_flushed_in_one_statement(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """EXECUTE on FLUSH's function revoked while the node runs: the append is retried
    in one flushed statement, and the copies of what went in first are dropped. No
    outage: at once (no retry after a back-off), and the operator is told once why and
    what to grant, not that the database cannot be reached."""
    import logging

    from p2phost_postgres_transport import _medium

    from p2phost_sdk.testing.transport import TransportKit

    service_or_skip("PostgreSQL", 5432)
    case = TransportCase(make=lambda limit: PostgresTransport(
        peer_id=Identity.generate().peer_id, max_frame_size=limit),
        listen_address=lambda: URL, unreachable_address="", bad_address="",
        unknown_peer_address="")
    frames = [n.to_bytes(4, "big") for n in range(50)]
    caplog.set_level(logging.WARNING)
    async with TransportKit(case).pair() as (client, server), asyncio.timeout(60):
        medium = client._endpoint.medium  # type: ignore[attr-defined]
        assert medium._early
        monkeypatch.setattr(_medium, "FLUSH", "SELECT no_such_function()")
        sending = asyncio.ensure_future(client.send_many(frames))
        got = [bytes(await server.recv()) for _ in frames]
        await sending
        assert not medium._early
    assert got == frames
    texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [t for t in texts if "cannot reach" in t], texts
    refused = [t for t in texts if "pg_logical_emit_message" in t]
    assert len(refused) == 1 and "fix:" in refused[0], texts

