"""The journal file itself: one node at a time, and its blocks really allocated.

A write through a shared mapping into a block the file system cannot provide kills the
process with SIGBUS, so the journal must own its blocks before the node starts; and a
second node opening the same journal would replay it and start it afresh beneath the
first one's appends.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from p2phost._runtime.delivery import _journal, _journals
from p2phost._runtime.delivery._journal import JOURNAL_NAME, Journal
from p2phost._runtime.delivery._store import StoreError
from p2phost_sdk import Identity
from tests.delivery.test_node import Keeper, Make, Sender, kind, make, until
from tests.runtime.processes import free_port

__all__ = ["kind", "make"]  # the fixtures, shared with test_node

SEGMENT = 64 * 1024


def test_a_second_opener_of_a_journal_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    first = Journal(path, SEGMENT)
    try:
        with pytest.raises(StoreError, match=r"in use by another node.*\nfix: stop the other"):
            Journal(path, SEGMENT)
    finally:
        first.close()
    Journal(path, SEGMENT).close()  # closed: the lock went with it


def test_a_sparse_journal_left_by_a_copy_is_allocated_at_start(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    with open(path, "wb") as handle:  # a valid, empty journal with no blocks (a hole)
        handle.truncate(2 * SEGMENT)
    if os.stat(path).st_blocks * 512 >= 2 * SEGMENT:
        pytest.skip("this file system makes no sparse files")
    Journal(path, SEGMENT).close()
    assert os.stat(path).st_blocks * 512 >= 2 * SEGMENT


def test_a_disk_too_full_for_the_journal_leaves_no_part_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / JOURNAL_NAME

    def full(fd: int, offset: int, size: int) -> None:
        os.pwrite(fd, bytes(size // 2), 0)  # part of it, as a real full disk leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_journal.os, "posix_fallocate", full)
    for _ in range(2):  # the same clear error each time, never "the file is damaged"
        with pytest.raises(StoreError, match=r"No space left on device.*disk full"):
            Journal(path, SEGMENT)
        assert path.stat().st_size == 0


async def test_a_journal_that_fills_with_the_receiver_down_loses_nothing(
        make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sends far beyond a small journal (bodies small, larger than a record may be,
    larger than a segment), the receiver down: every one kept, in order, once."""
    monkeypatch.setattr(_journals, "Journal", functools.partial(Journal, segment=16 * 1024))
    receiver_id = Identity.generate()
    state = tmp_path / "sender"
    sender = await make([Sender()], state=state, listen=[])
    sizes = [10, 10, 10, 1500, 3000, 10, 20_000]
    count = 700
    for n in range(count):
        await sender.send(receiver_id.peer_id, "kept", {"n": n, "pad": "x" * sizes[n % 7]})
    assert sender.delivery.snapshot()["outbox"].get("kept", 0) == count
    await sender.close()

    address = f"tcp://127.0.0.1:{free_port()}"
    keeper = Keeper()
    await make([keeper], listen=[address], identity=receiver_id)
    sender = await make([Sender()], state=state, listen=[])
    await sender.connect(address)
    await until(lambda: len(keeper.bodies) >= count, timeout=60)
    assert [body["n"] for body in keeper.bodies] == list(range(count))
    await until(lambda: sender.delivery.snapshot()["outbox"] == {})


def test_a_database_of_the_journals_is_refused_by_a_p2phost_that_would_not_replay_them(
        tmp_path: Path) -> None:
    # A database from before the journals opens and is marked as theirs; one marked
    # newer than this p2phost is refused (as a version-1 p2phost refuses a version 2).
    import sqlite3

    from p2phost._runtime.delivery._store import open_database

    path = tmp_path / "delivery.db"
    with sqlite3.connect(path) as old:
        old.execute("PRAGMA user_version=1")
    open_database(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        db.execute("PRAGMA user_version=3")
    with pytest.raises(StoreError, match="written by a newer p2phost"):
        open_database(path)
