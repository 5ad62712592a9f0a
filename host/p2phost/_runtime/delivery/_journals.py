"""Opening a node's two journals at start: replayed into the database first.

The outbox journal (:mod:`._outjournal`) always; the inbox journal (:mod:`._injournal`)
on a node that handles acknowledged topics, or when an earlier run left one behind
(it is replayed, then closed). Nothing is sent or taken before both are replayed.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ._injournal import INBOX_JOURNAL, INBOX_SEGMENT, OutcomeJournal
from ._journal import JOURNAL_NAME, SEGMENT, Journal, known_to_database
from ._outjournal import JournalRows
from ._store import StoreError

log = logging.getLogger("p2phost.delivery")


def journal_paths(database: Path) -> tuple[tuple[int, Path, int], ...]:
    """Each journal beside ``database``: its ``journal_mark`` id, path and segment size."""
    return ((0, database.with_name(JOURNAL_NAME), SEGMENT),
            (1, database.with_name(INBOX_JOURNAL), INBOX_SEGMENT))


def stray_journals(database: Path, used: set[int]) -> list[Path]:
    """The journals beside ``database`` it must know (they may hold what it lacks)
    although it has no ``journal_mark`` row for them: not the database they were used
    with (emptied, replaced, or made anew). One an earlier build only set up (no
    record) is taken on as new."""
    return [path for mark, path, segment in journal_paths(database)
            if mark not in used and known_to_database(path, segment)]


def replaced(database: Path, stray: list[Path]) -> StoreError:
    """The error for a database that knows nothing of the ``stray`` journals beside it."""
    return StoreError(
        f"{database} knows nothing of the journals beside it ({', '.join(map(str, stray))}), "
        "which were set up with the database that was there: it was emptied or replaced, "
        "and what only that one held (messages in its outbox, dead letters, the dedupe "
        "window, the apps' store) is not in it.\nfix: put back that database (with its "
        f"-wal and -shm files) if you have a copy; otherwise stop the node and move {database} "
        "(and its -wal and -shm files) aside to start with a new one, into which what the "
        "journals hold is replayed")


def open_journals(database: Path, writer: sqlite3.Connection, *, handles: bool,
                  new: bool = False) -> tuple[Journal, Journal | None]:
    """The outbox journal and the inbox journal (None: this node handles no acknowledged
    topic) beside ``database``, replayed into it through ``writer``; a damaged one is a
    :class:`~._journal.JournalCorrupt` naming the file and the fix. ``new``: this start
    made the database (there was none)."""
    # A journal_mark row: the journal's file was set up with this database (written as
    # soon as it is, before it holds anything), so it may hold records the database
    # lacks; p2phost never removes or empties one.
    used = {mark for (mark,) in writer.execute("SELECT id FROM journal_mark")}
    if stray := stray_journals(database, used):
        if not new:  # as an emptied journal is refused: nothing is lost without a word
            raise replaced(database, stray)
        log.warning("%s was missing (moved aside?): a new one was made, and what the "
                    "journals beside it hold is replayed into it; what only the old one "
                    "held (messages in its outbox, dead letters, the dedupe window, the "
                    "apps' store) is not in it", database)
    for mark, path, _ in journal_paths(database):
        if mark in used and not path.exists():
            # Moving a damaged journal aside is the way on its error gives: say what
            # that cost, but go on.
            log.warning("%s is missing, but the delivery database says it was in use: "
                        "what it held that the database does not (messages sent but not "
                        "yet acknowledged, or handlers' outcomes) is lost", path)
            # Made anew below: until its file is set up the database knows no journal
            # there, so a start that fails on the way (a full disk) leaves a file the
            # next start takes as new, not as one emptied.
            writer.execute("DELETE FROM journal_mark WHERE id = ?", (mark,))
            used.discard(mark)
    (_, outbox, _), (_, inbox, _) = journal_paths(database)
    opened: list[Journal] = []
    try:
        opened.append(Journal(outbox, used=0 in used))
        _mark(writer, 0)
        sent = JournalRows.replay(opened[0], writer)
        taken = 0
        if handles or inbox.exists():
            opened.append(Journal(inbox, INBOX_SEGMENT, used=1 in used))
            _mark(writer, 1)
            taken = OutcomeJournal.replay(opened[1], writer)
    except BaseException:
        for journal in opened:
            journal.close()
        raise
    if sent or taken:
        log.info("replayed from the journals: %d messages sent and %d outcomes committed "
                 "before the last stop", sent, taken)
    if len(opened) == 2 and not handles:  # replayed; this node takes no acknowledged ones
        opened.pop().close()
    return opened[0], opened[1] if len(opened) == 2 else None


def _mark(writer: sqlite3.Connection, mark: int) -> None:
    writer.execute("INSERT OR IGNORE INTO journal_mark (id, folded) VALUES (?, 0)", (mark,))
