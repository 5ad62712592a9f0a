"""postgres-transport's reader against what anyone on the database may do to it: flood
its channel with notifications, insert rows it must not read. On the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2phost_sdk import ConfigError, FrameTooLarge, Identity
from p2phost_sdk.testing.transport import TransportCase, TransportKit, receive
from tests.brokers.proxy import pump
from tests.brokers.test_greedy_sender import rss
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("postgres-transport")

from p2phost_postgres_transport import (  # noqa: E402
    Deadline,
    PostgresTransport,
    _sql,
    notify_channel,
)
from p2phost_postgres_transport._guards import ReaderStatements  # noqa: E402

URL = "postgresql://127.0.0.1:5432/test"
# Transactions of the flood: each NOTIFYs twice, an empty payload ("records were
# appended": a claim) and 2000 bytes of junk (memory, if kept).
FLOOD = 25_000


def _rss_mib() -> int:
    return rss(os.getpid()) >> 20


@contextlib.asynccontextmanager
async def _peak_rss() -> AsyncIterator[list[int]]:
    """``[MiB]``: the process's highest RSS while the block runs (sampled every 20 ms)."""
    peak = [_rss_mib()]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mib())
            await asyncio.sleep(0.02)

    sampling = asyncio.ensure_future(sample())
    try:
        yield peak
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        peak[0] = max(peak[0], _rss_mib())


def _count_executes(monkeypatch: pytest.MonkeyPatch, query: str) -> list[int]:
    """``[n]``: how many times ``query`` has run on any connection since."""
    import psycopg

    count = [0]
    execute = psycopg.AsyncConnection.execute

    async def counting(self: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += sql == query
        return await execute(self, sql, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", counting)
    return count


def _case() -> TransportCase:
    return TransportCase(make=lambda limit: PostgresTransport(
        peer_id=Identity.generate().peer_id, max_frame_size=limit),
        listen_address=lambda: URL, unreachable_address="", bad_address="",
        unknown_peer_address="")


async def test_a_flood_of_notifications_costs_neither_memory_nor_a_claim_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any role that may connect may NOTIFY a node's channel: 50,000 notifications
    (half of them "records were appended", half 2000 bytes of junk) while frames flow.
    The frames arrive in order, the node's memory stays flat, and its reader claims a
    few times per wake-up, not once per notification."""
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    claims = _count_executes(monkeypatch, _sql.CLAIM)
    flooder = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    frames = [n.to_bytes(4, "big") for n in range(3000)]
    try:
        async with TransportKit(_case()).pair() as (client, server), asyncio.timeout(90):
            channel = notify_channel(server._endpoint.inbox)  # type: ignore[attr-defined]
            await flooder.execute("SET synchronous_commit = off")
            base, before = _rss_mib(), claims[0]
            # One notification per transaction: PostgreSQL folds equal ones in one.
            flood = asyncio.ensure_future(flooder.execute(
                f"DO $$ BEGIN FOR i IN 1..{FLOOD} LOOP PERFORM pg_notify({_literal(channel)}, "
                f"''); PERFORM pg_notify({_literal(channel)}, repeat('z', 2000)); COMMIT; "
                "END LOOP; END $$"))
            async with _peak_rss() as peak:
                sending = asyncio.ensure_future(client.send_many(frames))
                got = [bytes(await server.recv()) for _ in frames]
                await sending
                await flood
                started = time.monotonic()
                # The flood's tail, then the reader at rest.
                await asyncio.sleep(3.0)
                rested = time.monotonic() - started
            taken = claims[0] - before
    finally:
        await flooder.close()
    assert got == frames
    assert peak[0] - base < 24, (
        f"the node's RSS grew by {peak[0] - base} MiB under {2 * FLOOD} notifications "
        f"(kept unread; {taken} claims)")
    assert taken < FLOOD // 25, (
        f"{taken} claims for {FLOOD} notifications saying records were appended "
        f"(and {len(frames)} frames) within the flood and {rested:.1f}s after it")


def _literal(text: str) -> str:
    """``text`` (a channel name: letters, digits, _) as an SQL string literal."""
    assert text.replace("_", "").isalnum()
    return f"'{text}'"


async def test_a_frame_over_the_limit_with_a_valid_header_is_refused_in_order_unread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer sends a frame larger than this node reads: its row is never fetched (only
    its first 256 bytes, the record's header), the connection refuses that frame in
    order as too large (FrameTooLarge, as if read), its row is deleted, and the frames
    after it come as usual."""
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    bodies = _count_executes(monkeypatch, _sql.BODY)
    async with TransportKit(_case()).pair(server_max=1 << 20) as (client, server), \
            asyncio.timeout(30):
        medium = server._endpoint.medium  # type: ignore[attr-defined]
        await client.send_many([b"before", b"x" * (2 << 20), b"after"])
        assert await receive(server) == b"before"
        with pytest.raises(FrameTooLarge, match="2097152 bytes, over the maximum of 1048576"):
            await server.recv()
        assert await receive(server) == b"after"
        assert medium.refused.count == 1
        assert bodies[0] == 0, "the large body was fetched"
        inbox = server._endpoint.inbox  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(URL) as connection:
            for _ in range(200):  # acknowledged, all three: deleted
                cursor = await connection.execute(
                    "SELECT count(*) FROM p2phost_inbox_records WHERE inbox = %s", (inbox,))
                if await cursor.fetchone() == (0,):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("rows of the connection left in the inbox")


class _Proxy:
    """A TCP proxy to PostgreSQL in this loop; :meth:`blackhole` makes the connections
    open so far answer nothing more, their sockets left open (a server host gone
    without closing them), while new ones still pass."""

    def __init__(self) -> None:
        self._pumps: set[asyncio.Task[None]] = set()
        self._held: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.blackhole()
        assert self._server is not None
        self._server.close()
        for writer in self._held:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._held += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(pump(source, sink))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    def blackhole(self) -> None:
        """Stop forwarding on every connection so far (new ones still pass)."""
        for task in list(self._pumps):
            task.cancel()


async def test_a_large_body_fetch_from_a_server_gone_silent_is_given_up_and_retried() -> None:
    """The server stops answering (its host gone, the socket left open) while the
    reader fetches a large body alone: the fetch is given up within its deadline (the
    floor plus its size's allowance), the reader connects again, and the frame comes."""
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    peer_id = Identity.generate().peer_id
    async with _Proxy() as proxy:
        transport = PostgresTransport(peer_id=peer_id, max_frame_size=8 << 20,
                                      deadline=Deadline(floor=1.0, per_mib=0.5))
        listener = await transport.listen(f"postgresql://127.0.0.1:{proxy.port}/test",
                                          lambda connection: None)  # type: ignore[arg-type,return-value]
        (endpoint,) = transport._endpoints.values()  # type: ignore[attr-defined]
        medium = endpoint.medium
        medium._reader.cancel()
        await asyncio.gather(medium._reader, return_exceptions=True)
        got: list[bytes] = []
        large = asyncio.Event()

        times: list[float] = []

        async def deliver(data: bytes, token: object) -> None:
            got.append(data)
            times.append(time.monotonic())
            if got == [b"small"]:
                proxy.blackhole()  # the large body is fetched next, after this one
            elif len(data) > 1 << 20:
                large.set()

        try:
            async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as other:
                await other.execute("INSERT INTO p2phost_inbox_records (inbox, body) "
                                    "SELECT %s, unnest(%s::bytea[])",
                                    (peer_id, [b"small", b"L" * (4 << 20)]))
            medium._reader = asyncio.get_running_loop().create_task(
                medium._read(await medium._listen(), deliver))
            # 1 s + 4 MiB at 0.5 s: 3 s, then a reconnect (backoff) and the claim again.
            await asyncio.wait_for(large.wait(), 15)
            assert medium.reconnects >= 1
            assert got == [b"small", b"small", b"L" * (4 << 20)]  # delivered again
            # Given up at the deadline (3 s), not after psycopg's cancel request and its
            # wait for the statement's end (5 s more): from the server's silence to the
            # claim after the reconnect, with 3 s of margin for a loaded host.
            took = times[1] - times[0]
            assert took < 6.0, f"the claim came again {took:.1f}s after the server went silent"
        finally:
            await listener.close()
            await transport.close()


def test_statement_deadlines_grow_with_what_they_may_bring() -> None:
    deadline = Deadline.from_config({"statement-timeout": 5.0, "seconds-per-mib": 2.0},
                                    "postgres-transport")
    assert deadline.seconds(0) == 5.0
    assert deadline.seconds(32 << 20) == 69.0
    assert Deadline.from_config({}, "postgres-transport") == Deadline(10.0, 0.5)
    for key, value in (("statement-timeout", 0), ("statement-timeout", float("inf")),
                       ("seconds-per-mib", -1.0), ("seconds-per-mib", float("nan"))):
        with pytest.raises(ConfigError, match=key):
            Deadline.from_config({key: value}, "postgres-transport")


async def test_a_statement_past_its_deadline_is_given_up_at_the_deadline() -> None:
    """The server goes silent during a statement: it fails at its deadline (the socket
    is shut down), not seconds later after a cancel request psycopg would send."""
    import psycopg
    from p2phost_postgres_transport._guards import ReaderStatements

    from p2phost_sdk.inbox import MediumUnavailable

    service_or_skip("PostgreSQL", 5432)
    async with _Proxy() as proxy:
        async with await psycopg.AsyncConnection.connect(
                f"postgresql://127.0.0.1:{proxy.port}/test", autocommit=True) as connection:
            reader = ReaderStatements(connection, Deadline(floor=1.0, per_mib=0.0), URL)
            assert await reader.rows("SELECT 1") == [(1,)]
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(MediumUnavailable, match="no answer within 1s"):
                await reader.rows("SELECT 1")
            took = time.monotonic() - started
            assert took < 3.0, f"given up after {took:.1f}s, the deadline is 1s"
            assert connection.broken or connection.closed


def test_the_readers_connections_need_no_statement_before_their_deadlines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``synchronous_commit = off`` goes with the connection's startup (the URL's own
    options kept), so no statement runs on a new connection without a deadline."""
    import psycopg
    from p2phost_postgres_transport import PostgresMedium

    service_or_skip("PostgreSQL", 5432)
    sets = _count_executes(monkeypatch, "SET synchronous_commit = off")

    async def main() -> None:
        url = URL + "?options=-c%20work_mem%3D1234kB"
        medium = PostgresMedium(PostgresTransport(peer_id=Identity.generate().peer_id)
                                .parse(url))
        connection = await medium._connect(flushed=False)
        async with connection:
            for name, value in (("synchronous_commit", "off"), ("work_mem", "1234kB")):
                cursor = await connection.execute(psycopg.sql.SQL("SHOW {}").format(
                    psycopg.sql.Identifier(name)))
                assert await cursor.fetchone() == (value,)
        assert sets[0] == 0

    asyncio.run(main())


async def test_a_notification_psycopg_cannot_decode_leaves_the_reader_reading() -> None:
    """On a SQL_ASCII database any role may NOTIFY a payload with a byte over 0x7f, which
    psycopg cannot decode as ASCII: the reader reads on (it decodes LATIN1 there), and
    records appended after it are delivered."""
    import psycopg
    from p2phost_postgres_transport import PostgresMedium

    service_or_skip("PostgreSQL", 5432)
    database = f"p2phost_ascii_{os.getpid()}_{time.monotonic_ns()}"
    url = f"postgresql://127.0.0.1:5432/{database}"
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {database} ENCODING 'SQL_ASCII' "
                            "TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        try:
            peer_id = Identity.generate().peer_id
            medium = PostgresMedium(PostgresTransport(peer_id=peer_id).parse(url))
            await medium.connect()
            got: list[bytes] = []
            came = asyncio.Event()

            async def deliver(data: bytes, token: object) -> None:
                got.append(data)
                came.set()

            await medium.open_inbox(peer_id, deliver)
            try:
                async with await psycopg.AsyncConnection.connect(
                        url, autocommit=True) as other:
                    await other.execute("SELECT pg_notify(%s, E'\\xff')",
                                        (notify_channel(peer_id),))
                    await asyncio.sleep(0.5)
                    await other.execute("INSERT INTO p2phost_inbox_records (inbox, body) "
                                        "VALUES (%s, 'hello')", (peer_id,))
                    await other.execute("SELECT pg_notify(%s, '')", (notify_channel(peer_id),))
                    await asyncio.wait_for(came.wait(), 10)
                assert got == [b"hello"]
                assert medium.reconnects == 0
            finally:
                await medium.close(delete_inbox=True)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.mark.parametrize("error", ["InsufficientPrivilege", "ReadOnlySqlTransaction",
                                   "UnicodeDecodeError"])
async def test_any_error_of_the_reader_is_a_lost_connection_it_reconnects_after(
        error: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An error that is no lost socket (a privilege revoked, a server turned read-only,
    a notification psycopg cannot decode) is logged once with a fix and the reader
    connects again, instead of ending for good."""
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    from p2phost_postgres_transport import PostgresMedium

    failed: list[str] = []
    drain = PostgresMedium._drain

    async def failing(self: Any, reader: Any, deliver: Any) -> None:
        if not failed:
            failed.append(error)
            if error == "UnicodeDecodeError":
                raise UnicodeDecodeError("ascii", b"\xff", 0, 1, "ordinal not in range")
            raise getattr(psycopg.errors, error)("refused")
        await drain(self, reader, deliver)

    monkeypatch.setattr(PostgresMedium, "_drain", failing)
    async with TransportKit(_case()).pair() as (client, server), asyncio.timeout(30):
        medium = server._endpoint.medium  # type: ignore[attr-defined]
        await client.send_many([b"one", b"two"])
        assert await receive(server) == b"one"
        assert await receive(server) == b"two"
        assert failed == [error]
        assert medium.reconnects == 1
    (line,) = [r.getMessage() for r in caplog.records if "lost PostgreSQL" in r.getMessage()]
    assert error in line and "\nfix: " in line


async def test_a_stream_of_forged_credits_costs_few_claims() -> None:
    """Anyone may NOTIFY credits (only their header is checked): a steady stream of
    distinct ones, some arriving while a claim runs, makes no claim of its own; the
    reader claims once per so many wake-ups (or its poll), not after every claim."""
    import psycopg
    from p2phost_postgres_transport import PostgresMedium

    from p2phost_sdk.inbox._record import HEADER, MAGIC

    service_or_skip("PostgreSQL", 5432)
    peer_id = Identity.generate().peer_id
    medium = PostgresMedium(PostgresTransport(peer_id=peer_id).parse(URL))
    await medium.connect()
    credits = 0

    async def deliver(data: bytes, token: object) -> None:
        nonlocal credits
        credits += token is None

    await medium.open_inbox(peer_id, deliver)
    try:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as other:
            await asyncio.sleep(0.3)
            before, sent, started = medium.claims, 0, time.monotonic()
            while time.monotonic() - started < 3.0:
                record = HEADER.pack(MAGIC, 1, 6, 0, os.urandom(16), 1, sent, 0, 0)
                await other.execute("SELECT pg_notify(%s, %s)",
                                    (notify_channel(peer_id), record.hex()))
                sent += 1
            taken = medium.claims - before
        assert credits > 0
        # The poll claims about once a second, and credit-only wake-ups once in so many
        # (_CREDIT_WAKES), each taking one credit at least. Before: a claim after every
        # claim that saw credits arrive (80 for 1021 credits in 3 s).
        from p2phost_postgres_transport._medium import _CREDIT_WAKES

        assert taken <= 4 + sent // _CREDIT_WAKES, (
            f"{taken} claims for {sent} forged credits in 3 s")
    finally:
        await medium.close(delete_inbox=True)


async def test_a_flood_during_a_statement_waits_in_the_server_not_in_the_node() -> None:
    """One transaction of large notifications commits while a reader's statement runs:
    the node's memory does not take the flood in (its listener runs no statements: the
    flood waits in the server's queue), and the reader still wakes for it after."""
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    channel = f"p2phost_flood_{os.getpid()}_{time.monotonic_ns()}"
    connection = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    listener = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    reader = ReaderStatements(connection, Deadline(), URL, listener)
    try:
        await reader.listen(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as other:
            base = _rss_mib()
            async with _peak_rss() as peak:
                statement = asyncio.ensure_future(reader.rows("SELECT pg_sleep(2)"))
                await asyncio.sleep(0.3)
                # 6000 notifications of 7900 bytes: 45 MiB, in one transaction.
                await other.execute("SELECT pg_notify(%s, i::text || repeat('x', 7900)) "
                                    "FROM generate_series(1, 6000) i", (channel,))
                await statement
        assert peak[0] - base < 16, f"the node's RSS grew by {peak[0] - base} MiB"
        await reader.notifications.wait(reader.listener, 5.0)
        assert reader.notifications.received > 0
    finally:
        await reader.close()
