"""postgres-transport: a claim the reader gave up on at its deadline must not lease rows
after the reconnect freed them. On the real PostgreSQL, in a schema of its own (the
trigger that slows the claim touches no other test's tables)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from p2phost_sdk import Identity
from tests.conftest import service_or_skip
from tests.discovery.plugins import OFFICIAL, use_plugin_source

use_plugin_source("postgres-transport")

from p2phost_postgres_transport import (  # noqa: E402
    Deadline,
    PostgresMedium,
    PostgresTransport,
    _sql,
)

URL = "postgresql://127.0.0.1:5432/test"
# How long the first claim that takes rows runs on the server: well past the client's
# deadline (1 s), so the reader gives up, reconnects and frees its leases meanwhile.
SLOW = 4.0
# A trigger after each claim (an UPDATE that leases rows): the first one sleeps, holding
# its row locks, before its transaction commits. A sequence counts them (not a table: an
# aborted claim must not make the next one slow again).
SLOW_FIRST_CLAIM = """
CREATE SEQUENCE slow_claims;
CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM taken WHERE leased) AND nextval('slow_claims') = 1 THEN
        PERFORM pg_sleep(%s);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER slow_claim AFTER UPDATE ON p2phost_inbox_records
    REFERENCING NEW TABLE AS taken FOR EACH STATEMENT EXECUTE FUNCTION slow_claim();
"""


@contextlib.asynccontextmanager
async def slow_first_claim(seconds: float) -> AsyncIterator[tuple[Any, str]]:
    """A schema of its own with the tables and :data:`SLOW_FIRST_CLAIM`: (a connection
    there, the URL of a node's medium there); dropped on leaving."""
    import psycopg

    service_or_skip("PostgreSQL", 5432)
    schema = f"p2phost_late_claim_{os.getpid()}_{time.monotonic_ns()}"
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            await admin.execute(f"SET search_path = {schema}")
            await admin.execute(_sql.SCHEMA)
            await admin.execute(SLOW_FIRST_CLAIM % seconds)
            yield admin, f"{URL}?options=-c%20search_path%3D{schema}"
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")


async def receive_all(medium: PostgresMedium, admin: Any, peer_id: str,
                      records: list[bytes], within: float) -> None:
    """Open ``medium``'s inbox and wait up to ``within`` seconds for ``records`` (in any
    order); else fail, showing the rows and their leases."""
    got: list[bytes] = []
    all_came = asyncio.Event()

    async def deliver(data: bytes, token: object) -> None:
        got.append(data)
        if set(got) == set(records):
            all_came.set()

    await medium.open_inbox(peer_id, deliver)
    try:
        await asyncio.wait_for(all_came.wait(), within)
    except TimeoutError:
        cursor = await admin.execute("SELECT body, leased FROM p2phost_inbox_records "
                                     "ORDER BY id")
        rows = [(bytes(body), leased) for body, leased in await cursor.fetchall()]
        raise AssertionError(f"delivered {got} after {medium.reconnects} reconnects; the "
                             f"rows: {rows}") from None


async def stored(url: str, peer_id: str, records: list[bytes],
                 deadline: Deadline, state_dir: Path | None = None) -> PostgresMedium:
    """A medium at ``url`` for ``peer_id``, its inbox holding ``records``."""
    medium = PostgresMedium(PostgresTransport(peer_id=peer_id).parse(url), deadline,
                            state_dir)
    await medium.connect()
    await medium.create_inbox(peer_id)
    await medium.store(peer_id, records)
    return medium


async def test_a_claim_given_up_at_its_deadline_leases_nothing_after_the_reconnect() -> None:
    """The server runs a claim past the reader's deadline (a loaded or locked-up server):
    the reader gives up, reconnects and frees its inbox's leased rows; the claim must not
    commit its leases after that (the rows would be leased to nobody, never delivered
    until the node restarted). Every record is delivered within a few seconds."""
    peer_id, records = Identity.generate().peer_id, [b"one", b"two", b"three"]
    async with slow_first_claim(SLOW) as (admin, url):
        medium = await stored(url, peer_id, records, Deadline(floor=1.0, per_mib=0.0))
        try:
            # The slow claim, cut at 1 s, a reconnect; then the rows must come again at
            # once, not be held by a claim committed after it.
            await receive_all(medium, admin, peer_id, records, SLOW + 4.0)
            assert medium.reconnects >= 1  # the slow claim was given up
        finally:
            await medium.close(delete_inbox=True)


# A node's reader in a process of its own (to be killed), with its state directory.
READER = """
import asyncio, sys
from pathlib import Path
from p2phost_postgres_transport import Deadline, PostgresMedium, PostgresTransport

async def main(url, peer_id, state_dir):
    medium = PostgresMedium(PostgresTransport(peer_id=peer_id).parse(url),
                            Deadline(floor=30.0, per_mib=0.0), Path(state_dir))
    await medium.connect()
    async def deliver(data, token):
        pass
    await medium.open_inbox(peer_id, deliver)
    await asyncio.sleep(60)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_claim_of_a_killed_run_leases_nothing_after_the_next_run_starts(
        tmp_path: Path) -> None:
    """A node is killed while the server runs its claim; it starts again (same state
    directory) and frees its inbox's leased rows before that claim ends: the claim
    must not commit its leases after that. Every record is delivered to the new run."""
    peer_id, records = Identity.generate().peer_id, [b"one", b"two", b"three"]
    async with slow_first_claim(6.0) as (admin, url):
        medium = await stored(url, peer_id, records, Deadline(floor=2.0, per_mib=0.0),
                              tmp_path)
        killed = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER, url, peer_id, str(tmp_path),
            env={**os.environ, "PYTHONPATH": str(OFFICIAL / "postgres-transport" / "src")})
        try:
            # Until the killed run's claim sleeps in the server (the trigger), rows locked.
            for _ in range(300):
                if await (await admin.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                        "AND query LIKE '%UPDATE p2phost_inbox_records SET leased = true%' "
                        "AND datname = current_database()")).fetchall():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the first run's claim never reached the server")
        finally:
            killed.kill()
            await killed.wait()
        try:
            await receive_all(medium, admin, peer_id, records, 6.0 + 4.0)
        finally:
            await medium.close(delete_inbox=True)


async def test_a_reader_file_naming_another_inboxs_reader_ends_nothing_there(
        tmp_path: Path) -> None:
    """A node's reader file (copied or corrupted) names the live reader process of
    another node's inbox on the same database and role: starting, the node must not end
    it (that node would lose its connection and deliver its claimed rows again)."""
    import psycopg

    first, second = Identity.generate().peer_id, Identity.generate().peer_id
    async with slow_first_claim(0.0) as (admin, url):  # (no claim slowed)
        other = await stored(url, second, [b"theirs"], Deadline(floor=2.0, per_mib=0.0),
                             tmp_path / "other")
        try:
            await receive_all(other, admin, second, [b"theirs"], 5.0)
            noted = next((tmp_path / "other").glob("postgres-reader-*")).read_text()
            medium = await stored(url, first, [b"mine"], Deadline(floor=2.0, per_mib=0.0),
                                  tmp_path / "mine")
            (tmp_path / "mine").mkdir()
            digest = hashlib.sha256(f"{medium.url}#{first}".encode()).hexdigest()[:16]
            (tmp_path / "mine" / f"postgres-reader-{digest}").write_text(noted)
            try:
                await receive_all(medium, admin, first, [b"mine"], 5.0)
            finally:
                await medium.close(delete_inbox=True)
            async with await psycopg.AsyncConnection.connect(URL) as check:
                cursor = await check.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                             (int(noted.split()[0]),))
                assert await cursor.fetchall(), "the other inbox's reader was ended"
            assert other.reconnects == 0
        finally:
            await other.close(delete_inbox=True)
