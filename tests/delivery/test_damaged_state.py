"""Damaged delivery state stops the start with an error and its fix, never silently.

A journal emptied or with its header zeroed while it still held sends, and a delivery
database damaged in a page only replay reads: each is the error a user can act on (no
empty outbox without a word, no traceback). A genuinely new project starts clean.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from p2phost._runtime.delivery._injournal import INBOX_JOURNAL, INBOX_SEGMENT
from p2phost._runtime.delivery._journal import JOURNAL_NAME, SEGMENT, Journal, JournalCorrupt
from p2phost._runtime.delivery._journals import open_journals
from p2phost._runtime.delivery._store import DATABASE_NAME, StoreError, open_database
from p2phost_sdk import Identity
from tests.delivery.test_node import Make, Sender, kind, make

__all__ = ["kind", "make"]  # the fixtures, shared with test_node
FIX = "\nfix: "


async def unacknowledged(make: Make, state: Path, count: int = 30) -> None:
    """A node of ``state`` that sent ``count`` messages nobody acknowledged, stopped
    (they wait in its journal, not yet folded)."""
    node = await make([Sender()], state=state, listen=[])
    peer = Identity.generate().peer_id
    for n in range(count):
        await node.send(peer, "kept", n)
    await node.close()


@pytest.mark.parametrize("damage", ["zeroed header", "emptied"])
async def test_a_journal_zeroed_or_emptied_with_sends_in_it_stops_the_start(
        make: Make, tmp_path: Path, damage: str) -> None:
    state = tmp_path / "sender"
    await unacknowledged(make, state)
    path = state / JOURNAL_NAME
    if damage == "emptied":
        path.write_bytes(b"")  # `: > outbox.journal`
    else:
        with path.open("r+b") as file:  # dd if=/dev/zero bs=64 count=1 conv=notrunc
            file.write(bytes(64))
    with pytest.raises(JournalCorrupt) as caught:
        await make([Sender()], state=state, listen=[])
    text = str(caught.value)
    assert str(path) in text and f"{FIX}" in text and "aside" in text.split(FIX)[1], text


async def test_moving_the_damaged_journal_aside_lets_the_node_start_and_says_so(
        make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "sender"
    await unacknowledged(make, state)
    path = state / JOURNAL_NAME
    path.rename(path.with_name("outbox.journal.damaged"))  # the fix the error gives
    await starts_saying(make, state, caplog, f"{path} is missing")


async def starts_saying(make: Make, state: Path, caplog: pytest.LogCaptureFixture,
                        said: str) -> None:
    """A node of ``state`` starts (and stops), with a warning that says ``said``."""
    with caplog.at_level(logging.WARNING, "p2phost.delivery"):
        node = await make([Sender()], state=state, listen=[])
    await node.close()
    assert any(said in r.getMessage() for r in caplog.records)


async def test_a_new_project_starts_clean_and_its_journal_then_counts(
        make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "new"
    with caplog.at_level(logging.WARNING, "p2phost.delivery"):
        node = await make([Sender()], state=state, listen=[])
    await node.close()
    assert not [r for r in caplog.records if "journal" in r.getMessage()]
    (state / JOURNAL_NAME).write_bytes(b"")  # now the database knows it was in use
    with pytest.raises(JournalCorrupt, match="is empty"):
        await make([Sender()], state=state, listen=[])


def test_a_never_used_all_zero_journal_is_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(bytes(2 * 64 * 1024))
    journal = Journal(path, segment=64 * 1024)
    assert list(journal.replay()) == []
    journal.close()


def test_an_emptied_inbox_journal_stops_the_start(tmp_path: Path) -> None:
    """Its outcomes are dedupe marks: lost, an effectively-once handler runs again."""
    database = tmp_path / "delivery.db"
    db = open_database(database)
    outbox, inbox = open_journals(database, db, handles=True)
    assert inbox is not None
    outbox.close()
    inbox.close()
    (tmp_path / INBOX_JOURNAL).write_bytes(b"")
    with pytest.raises(JournalCorrupt) as caught:
        open_journals(database, db, handles=True)
    assert f"{tmp_path / INBOX_JOURNAL} is empty" in str(caught.value)
    assert FIX in str(caught.value)
    # The error left nothing locked: the outbox journal opens again.
    Journal(tmp_path / JOURNAL_NAME).close()
    Journal(tmp_path / "other", INBOX_SEGMENT).close()
    db.close()


def malformed(path: Path) -> None:
    """`dd if=/dev/urandom of=delivery.db bs=4096 seek=3 count=20 conv=notrunc`."""
    noise = random.Random(7)
    with path.open("r+b") as file:
        file.seek(4096 * 3)
        file.write(noise.randbytes(4096 * 20))


def grown_database(path: Path) -> None:
    """A database with tables spread over pages past the first few."""
    db = open_database(path)
    db.execute("INSERT OR REPLACE INTO journal_mark (id, folded) VALUES (0, 5)")
    db.executemany("INSERT INTO app_state (app, key, value) VALUES ('a', ?, ?)",
                   ((f"k{n}", "v" * 200) for n in range(400)))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


async def test_a_malformed_database_stops_the_start_with_the_move_aside_fix(
        make: Make, tmp_path: Path) -> None:
    state = tmp_path / "node"
    state.mkdir()
    path = state / "delivery.db"
    grown_database(path)
    malformed(path)
    with pytest.raises(StoreError) as caught:
        await make([Sender()], state=state, listen=[])
    text = str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert "damaged" in text and f"{FIX}stop the node and move {path}" in text, text


def test_a_database_cut_short_says_to_move_it_aside_in_a_fix_line(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    grown_database(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(StoreError) as caught:
        open_database(path)
    assert f"{FIX}stop the node and move {path}" in str(caught.value), str(caught.value)


async def test_doctor_finds_what_would_stop_the_start(make: Make, tmp_path: Path) -> None:
    from p2phost._runtime.delivery._check import check_state

    state = tmp_path / "sender"
    assert check_state(state) == []  # a new project: nothing to look at
    await unacknowledged(make, state)
    assert [ok for ok, _, _ in check_state(state)] == [True]
    path = state / JOURNAL_NAME
    before = path.read_bytes()
    with path.open("r+b") as file:
        file.write(bytes(64))
    [(ok, text, fix)] = check_state(state)
    assert not ok and str(path) in text and fix is not None and "aside" in fix
    path.write_bytes(before)
    assert [ok for ok, _, _ in check_state(state)] == [True]  # it changed nothing
    grown_database(state / "delivery.db")
    malformed(state / "delivery.db")
    [(ok, text, fix)] = check_state(state)
    assert not ok and "damaged" in text and fix is not None and fix.startswith("stop the node")


async def test_a_journal_a_full_disk_left_empty_is_new_at_the_next_start(
        make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal was moved aside (its error's fix) and the start that made it anew
    found the disk full: the empty file it left never held a record, unlike one emptied."""
    state = tmp_path / "sender"
    await unacknowledged(make, state)
    path = state / JOURNAL_NAME
    path.rename(path.with_name("outbox.journal.damaged"))

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(StoreError, match="is the disk full"):
        await make([Sender()], state=state, listen=[])
    assert path.stat().st_size == 0
    monkeypatch.undo()  # room again
    node = await make([Sender()], state=state, listen=[])
    await node.close()
    path.write_bytes(b"")  # and one that was in use, emptied, is still refused
    with pytest.raises(JournalCorrupt, match="is empty"):
        await make([Sender()], state=state, listen=[])


@pytest.mark.parametrize("damage", ["emptied", "replaced"])
async def test_a_database_emptied_or_replaced_beside_journals_in_use_stops_the_start(
        make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    state = tmp_path / "sender"
    await unacknowledged(make, state)  # folded into the database as it stopped
    database = state / "delivery.db"
    for name in ("delivery.db-wal", "delivery.db-shm"):
        (state / name).unlink(missing_ok=True)
    if damage == "emptied":
        database.write_bytes(b"")  # `: > delivery.db`, a failed copy
    else:
        database.unlink()
        open_database(database).close()  # another, new database in its place
    with pytest.raises(StoreError) as caught:
        await make([Sender()], state=state, listen=[])
    text = str(caught.value)
    assert str(database) in text and FIX in text and "aside" in text.split(FIX)[1], text
    from p2phost._runtime.delivery._check import check_state
    [(ok, said, fix)] = check_state(state)  # doctor says the same
    assert not ok and str(database) in said and fix is not None and "aside" in fix
    # The fix: moved aside, the node starts with a new database, and says so.
    database.rename(state / "delivery.db.old")
    await starts_saying(make, state, caplog, f"{database} was missing")


async def test_a_start_the_store_fails_leaves_no_journal_open(
        make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails after the outbox's journal is taken on and before the inbox's is:
    both are closed (unlocked), so a start again in the same process opens them."""
    from p2phost._runtime.delivery import _delivery
    from tests.delivery.test_node import Keeper

    state = tmp_path / "node"

    class Failing(_delivery.OutcomeJournal):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(_delivery, "OutcomeJournal", Failing)
    with pytest.raises(StoreError, match="damaged"):
        await make([Keeper()], state=state, listen=[])
    monkeypatch.undo()
    node = await make([Keeper()], state=state, listen=[])
    await node.close()


def as_an_earlier_build_left_it(state: Path) -> None:
    """What builds f7c66ec up to fafa53e left: a journal_mark row only once a journal
    folded (none here), and journal headers without the tag that says the database
    was told of the journal as it was set up."""
    db = sqlite3.connect(state / DATABASE_NAME)
    with db:
        db.execute("DELETE FROM journal_mark")
    db.close()
    for name, segment in ((JOURNAL_NAME, SEGMENT), (INBOX_JOURNAL, INBOX_SEGMENT)):
        path = state / name
        if path.exists():
            with path.open("r+b") as file:
                for index in (0, 1):
                    file.seek(index * segment + 16)
                    file.write(bytes(8))


async def test_a_project_an_earlier_build_ran_without_sending_starts(
        make: Make, tmp_path: Path) -> None:
    """Its journal holds only headers and its database no mark: new, not a sign the
    database was replaced (refused, the fix given threw away its dead letters, dedupe
    window and apps' store). A journal of such a build holding records is refused."""
    from p2phost._runtime.delivery._check import check_state

    state = tmp_path / "node"
    await (await make([Sender()], state=state, listen=[])).close()
    as_an_earlier_build_left_it(state)
    assert all(ok for ok, _, _ in check_state(state))
    await (await make([Sender()], state=state, listen=[])).close()
    database = state / DATABASE_NAME  # from now on, replacing it is found
    database.unlink()
    open_database(database).close()
    with pytest.raises(StoreError, match="emptied or replaced"):
        await make([Sender()], state=state, listen=[])

    state = tmp_path / "sent"
    await (await make([Sender()], state=state, listen=[])).close()
    journal = Journal(state / JOURNAL_NAME)  # a record in it (as a kill leaves sends)
    journal.restart()
    journal.append(b"a send")
    journal.close()
    as_an_earlier_build_left_it(state)
    with pytest.raises(StoreError, match="emptied or replaced"):
        await make([Sender()], state=state, listen=[])
    [(ok, _, _)] = check_state(state)
    assert not ok


async def test_fresh_restarted_copied_and_moved_aside_databases_all_start(
        make: Make, tmp_path: Path) -> None:
    from p2phost._runtime.delivery._check import check_state

    state = tmp_path / "a" / ".p2phost"
    node = await make([Sender()], state=state, listen=[])  # fresh
    await node.close()
    await (await make([Sender()], state=state, listen=[])).close()  # restart
    await unacknowledged(make, state)  # sends waiting in the journal
    copy = tmp_path / "b" / ".p2phost"
    shutil.copytree(state, copy)  # the project copied elsewhere
    assert all(ok for ok, _, _ in check_state(copy))
    node = await make([Sender()], state=copy, listen=[])
    assert len(node.delivery.snapshot()["outbox"]) == 1
    await node.close()
    (copy / DATABASE_NAME).rename(copy / "aside.db")  # moved aside: starts, warns
    for suffix in ("-wal", "-shm"):
        if (side := copy / (DATABASE_NAME + suffix)).exists():
            side.rename(copy / ("aside.db" + suffix))
    node = await make([Sender()], state=copy, listen=[])
    # (folded into the database by the last close: what only it held is gone, as warned)
    await node.close()
    await (await make([Sender()], state=copy, listen=[])).close()  # and again
    assert all(ok for ok, _, _ in check_state(copy))


async def test_doctor_says_what_the_next_start_does_without_delivery_db(
        make: Make, tmp_path: Path) -> None:
    from p2phost._runtime.delivery._check import missing_database

    state = tmp_path / "node"
    assert missing_database(state) is None  # a new project
    await unacknowledged(make, state)
    assert missing_database(state) is None
    (state / DATABASE_NAME).rename(state / "aside.db")
    found = missing_database(state)
    assert found is not None
    text, fix = found
    assert "the next start makes a new one" in text and str(state / JOURNAL_NAME) in text
    assert "put it back" in fix
