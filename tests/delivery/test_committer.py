"""Group commit on the loop: what keeps it there, and what the WAL does under a steady
stream of sends (one commit each, as one awaited sender makes them)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2phost._runtime.delivery import _committer
from p2phost._runtime.delivery._committer import Committer
from p2phost._runtime.delivery._store import DATABASE_NAME, Op, open_connections


@pytest.fixture
async def committer(tmp_path: Path) -> AsyncIterator[Committer]:
    db, writer, quick = open_connections(tmp_path / DATABASE_NAME)
    committer = Committer(db, writer, quick)
    try:
        yield committer
    finally:
        await committer.close()
        db.close()


def insert(number: int) -> Op:
    def op(db: sqlite3.Connection) -> int:
        cursor = db.execute("INSERT INTO outbox (dest, id, topic, content_type, body, created) "
                            "VALUES ('peer', ?, 'topic', 'application/json', ?, 0)",
                            (number, b"x" * 64))
        return int(cursor.lastrowid or 0)
    return op


async def test_a_steady_stream_of_commits_keeps_the_wal_small(committer: Committer,
                                                              tmp_path: Path) -> None:
    wal = tmp_path / f"{DATABASE_NAME}-wal"
    largest = 0
    for number in range(6 * _committer._CHECKPOINT_EVERY):
        await committer.write(insert(number), quick=True)
        largest = max(largest, wal.stat().st_size)
    # A commit here writes 3 pages (table, index, sequence); the WAL starts afresh after
    # each checkpoint, so it never holds much more than one checkpoint's worth. (When
    # the checkpoint ran beside the loop's commits, it never caught up: the WAL of
    # benchmarks/delivery.py's sender grew to 134 MB in 31,000 sends, and on.)
    page = 4096 + 24
    assert largest <= 2 * _committer._CHECKPOINT_EVERY * 3 * page, largest
    assert committer.loop_commits >= 5 * _committer._CHECKPOINT_EVERY


async def test_a_preempted_commit_stays_on_the_loop_a_blocked_one_goes_to_the_thread(
        committer: Committer) -> None:
    def spin(db: sqlite3.Connection) -> None:  # slow, but never waits: like a preemption
        until = time.perf_counter() + 2 * _committer._LOOP_STALL
        while time.perf_counter() < until:
            pass

    def block(db: sqlite3.Connection) -> None:  # waits, as on a slow disk
        time.sleep(2 * _committer._LOOP_STALL)

    for _ in range(6):
        await committer.write(spin, quick=True)
    assert committer.loop_commits == 6
    for _ in range(6):
        await committer.write(block, quick=True)
    # Once could be the GIL; the second blocked commit sends the rest to the thread.
    assert committer.loop_commits == 6 + 2
    assert committer.commits == 12
