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


async def test_a_steady_stream_of_commits_keeps_the_wal_small(
        committer: Committer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every commit on the loop, however loaded the machine (that is what is tested).
    monkeypatch.setattr(_committer, "_LOOP_STALL", 60.0)
    monkeypatch.setattr(_committer, "_LOOP_LIMIT", 60.0)
    wal = tmp_path / f"{DATABASE_NAME}-wal"
    largest = 0
    for number in range(6 * _committer._CHECKPOINT_EVERY):
        await committer.write(insert(number), quick=True)
        largest = max(largest, wal.stat().st_size)
    # A commit here writes 3 pages (table, index, sequence); the WAL starts afresh after
    # each checkpoint, so it never holds much more than one checkpoint's worth. (When
    # the checkpoint ran beside the loop's commits, it never caught up: 39 MB here, and
    # benchmarks/delivery.py's sender's grew to 134 MB in 31,000 sends, and on.)
    page = 4096 + 24
    assert largest <= 2 * _committer._CHECKPOINT_EVERY * 3 * page, largest
    assert committer.loop_commits >= 5 * _committer._CHECKPOINT_EVERY


async def test_one_slow_commit_stays_on_the_loop_repeated_ones_go_to_the_thread(
        committer: Committer) -> None:
    def slow(db: sqlite3.Connection) -> None:  # the disk, or the machine preempting us
        time.sleep(2 * _committer._LOOP_STALL)

    def quick(db: sqlite3.Connection) -> None:
        pass

    await committer.write(slow, quick=True)
    for _ in range(_committer._LOOP_SAMPLE):  # a new sample starts clean
        await committer.write(quick, quick=True)
    assert committer.loop_commits == 1 + _committer._LOOP_SAMPLE
    for _ in range(4):
        await committer.write(slow, quick=True)
    # The second slow one in a sample sends the rest to the thread (for a second).
    assert committer.loop_commits == 1 + _committer._LOOP_SAMPLE + 2
    assert committer.commits == 1 + _committer._LOOP_SAMPLE + 4
