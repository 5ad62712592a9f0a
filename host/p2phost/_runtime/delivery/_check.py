"""``p2phost doctor``'s look at the delivery state: what would stop ``p2phost run``, and
messages that wait for peers the node cannot dial.

The same checks the node's start makes (:mod:`._store`, :mod:`._journals`), without
changing anything: the database is opened read-only and checked page by page (SQLite's
``quick_check``), each journal is opened and read as a replay would read it, but not
replayed. A journal locked by the running node is that node's, and in use: not read.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from ._journal import Journal, JournalCorrupt
from ._journals import journal_paths, replaced, stray_journals
from ._outjournal import unfolded
from ._redial import saved_addresses, unknown_peer
from ._store import DATABASE_NAME, StoreError, damaged, store_error

#: One finding: whether it is fine, what, and its fix.
Finding = tuple[bool, str, str | None]


def _problem(exc: StoreError) -> Finding:
    text, _, fix = str(exc).partition("\nfix: ")
    return False, text, fix or None


def missing_database(state_dir: Path) -> tuple[str, str] | None:
    """What the next start does when ``delivery.db`` is missing beside journals a node
    set up (moved aside, or deleted), with its fix: None when it is there, or there are
    no journals either (a new project)."""
    database = state_dir / DATABASE_NAME
    if database.exists():
        return None
    journals = [str(path) for _, path, _ in journal_paths(database)
                if path.exists() and path.stat().st_size > 0]
    if not journals:
        return None
    return (f"{database} is missing beside the journals a node set up with it "
            f"({', '.join(journals)}): the next start makes a new one and replays what "
            "they hold into it; what only the old one held (messages in its outbox, dead "
            "letters, the dedupe window, the apps' store) is not in it",
            f"if it was moved aside by mistake, put it back (with its -wal and -shm files) "
            f"as {database} before the next start")


def check_state(state_dir: Path) -> list[Finding]:
    """What would stop a start on the delivery state in ``state_dir`` (nothing when the
    node never kept any); an ok finding when it all reads."""
    database = state_dir / DATABASE_NAME
    if not database.exists():
        return []
    found: list[Finding] = []
    used: set[int] = set()
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
        try:
            verdict = str(db.execute("PRAGMA quick_check").fetchone()[0])
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'journal_mark'"
                          ).fetchone() is not None:
                used = {int(m) for (m,) in db.execute("SELECT id FROM journal_mark")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        if damaged(exc):
            return [_problem(store_error(database, exc))]
        found.append((False, f"cannot check {database}: {exc}",
                      "try again (the node may be busy writing)"))
    if not found and (stray := stray_journals(database, used)):
        found.append(_problem(replaced(database, stray)))
    for mark, path, segment in journal_paths(database):
        if not path.exists() or (path.stat().st_size == 0 and mark not in used):
            continue  # the start makes it anew (run warns when one in use went missing)
        try:
            journal = Journal(path, segment, used=mark in used)
        except JournalCorrupt as exc:
            found.append(_problem(exc))
            continue
        except StoreError:
            continue  # locked: the running node's, which replayed it at its start
        try:
            for _ in journal.replay():
                pass
        except JournalCorrupt as exc:
            found.append(_problem(exc))
        finally:
            journal.close()
    if not found:
        found.append((True, f"delivery state in {state_dir} reads", None))
    return found


#: Peers with no known address doctor names one by one at most (then how many more).
_NAMED = 10


def unreachable(state_dir: Path) -> list[tuple[str, str]]:
    """Peer ids the outbox in ``state_dir`` holds messages for that the node knows no
    address for (their messages wait until the peer connects): what to say, and the
    fix. What a running node's journal holds is its own (it warned when it was sent)."""
    database = state_dir / DATABASE_NAME
    if not database.exists():
        return []
    owed: Counter[str] = Counter()
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
        try:
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
            if not {"outbox", "peer_address", "journal_mark"} <= tables:
                return []
            owed.update(dict(db.execute("SELECT dest, COUNT(*) FROM outbox GROUP BY dest")))
            known = {peer for peer, text in db.execute("SELECT peer, addresses FROM "
                                                       "peer_address") if saved_addresses(text)}
            marks = dict(db.execute("SELECT id, folded FROM journal_mark"))
        finally:
            db.close()
    except sqlite3.Error:
        return []  # (check_state says what is wrong with it)
    mark, path, segment = journal_paths(database)[0]  # the outbox's
    if path.exists() and (path.stat().st_size > 0 or mark in marks):
        try:
            journal = Journal(path, segment, used=mark in marks)
        except (JournalCorrupt, StoreError):
            journal = None  # damaged (check_state says so), or the running node's
        if journal is not None:
            try:
                puts, _ = unfolded(journal.replay(), marks.get(mark, 0))
                owed.update(dest for dest, _ in puts)
            except JournalCorrupt:
                pass
            finally:
                journal.close()
    peers = sorted(p for p in owed if "://" not in p and p not in known)
    found = [unknown_peer(peer, owed[peer]) for peer in peers[:_NAMED]]
    if len(peers) > _NAMED:
        found.append((f"{len(peers) - _NAMED} more peers the outbox holds messages for "
                      f"have no known address ({sum(owed[p] for p in peers[_NAMED:])} "
                      "messages)", unknown_peer(peers[0])[1]))
    return found
