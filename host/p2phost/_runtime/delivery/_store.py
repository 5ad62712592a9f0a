"""The node's delivery database (SQLite, ``.p2phost/delivery.db``): its schema and its
connections.

One file holds everything acknowledged delivery must not lose: the sender's outbox, the
receiver's dedupe window, messages waiting for a delayed retry, the dead letters, and
the apps' durable state. WAL mode with ``synchronous=NORMAL``: a committed transaction
survives the process being killed (not a power cut: docs/delivery.md).

Writes go through the :class:`~._committer.Committer` (group commit, a writer thread);
sends and handlers' outcomes reach it through the journals (:mod:`._journal`), which
make them durable first.
The loop reads through its own connection: in WAL mode a reader never waits for a
writer (another process's ``p2phost dead purge`` included).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2phost_sdk import P2PHostError

log = logging.getLogger("p2phost.delivery")

DATABASE_NAME = "delivery.db"
# 2: sends and outcomes may wait in the journals beside the database (``_journal``); a
# p2phost that reads only version 1 would not replay them, so it refuses the database
# instead of losing what they hold.
_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dest TEXT NOT NULL,
    id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    UNIQUE (dest, id)
);
-- Where the peers this node connected to can be dialled (_redial.py): the most
-- recently seen (those this node dialled before those that only dialled in), and every
-- peer the outbox holds messages for.
CREATE TABLE IF NOT EXISTS peer_address (
    peer TEXT PRIMARY KEY,
    addresses TEXT NOT NULL,  -- a JSON list
    seen REAL NOT NULL DEFAULT 0,  -- when it last connected (epoch seconds)
    dialled INTEGER NOT NULL DEFAULT 0  -- 1: this node dialled it (not only it this node)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal_mark (
    id INTEGER PRIMARY KEY CHECK (id IN (0, 1)),  -- the outbox's, the inbox's journal
    folded INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dedupe (
    sender TEXT NOT NULL,
    id INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (sender, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_at ON dedupe (at);
CREATE TABLE IF NOT EXISTS delayed (
    key INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    due REAL NOT NULL,
    first_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    direction TEXT NOT NULL,
    peer TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    traceback TEXT NOT NULL,
    first_at REAL NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_topic ON dead (topic);
CREATE TABLE IF NOT EXISTS app_state (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app, key)
) WITHOUT ROWID;
"""


class StoreError(P2PHostError):
    """The delivery database cannot be opened or written."""


def damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the database file is damaged (malformed, not a database),
    which trying again never mends; not a busy, locked, full or unwritable one."""
    return isinstance(exc, sqlite3.DatabaseError) \
        and not isinstance(exc, sqlite3.OperationalError)


def move_aside(path: Path | None) -> str:
    """The fix for a damaged delivery database at ``path``."""
    return (f"stop the node and move {path} (and its -wal and -shm files) aside to start "
            "afresh; the outbox, dead letters and store it held are then gone")


def store_error(path: Path | None, exc: sqlite3.Error) -> StoreError:
    """The error, with its fix, for ``exc`` raised while opening or replaying the
    delivery database at ``path``."""
    if damaged(exc):
        return StoreError(f"the delivery database {path} is damaged: {exc}.\n"
                          f"fix: {move_aside(path)}")
    return StoreError(f"cannot open the delivery database {path}: {exc}.\nfix: check that "
                      "the disk has room and the file's permissions; if the file is damaged, "
                      f"{move_aside(path)}")


def sql_id(message_id: int) -> int:
    """A u64 message id as SQLite's signed 64-bit integer (and :func:`wire_id` back)."""
    return message_id - (1 << 64) if message_id >= 1 << 63 else message_id


def wire_id(stored: int) -> int:
    """The u64 message id of a stored one."""
    return stored + (1 << 64) if stored < 0 else stored


def open_database(path: Path | None, *, memory_name: str | None = None,
                  timeout: float = 5.0, check_same_thread: bool = True) -> sqlite3.Connection:
    """The delivery database at ``path`` (created if needed); in memory when None (shared
    by the connections opened with the same ``memory_name``)."""
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), isolation_level=None, timeout=timeout,
                                 check_same_thread=check_same_thread)
        elif memory_name is not None:
            db = sqlite3.connect(f"file:{memory_name}?mode=memory&cache=shared", uri=True,
                                 isolation_level=None, timeout=timeout,
                                 check_same_thread=check_same_thread)
            # Shared-cache readers would otherwise fail at once while the writer writes.
            db.execute("PRAGMA read_uncommitted=1")
        else:
            db = sqlite3.connect(":memory:", isolation_level=None, timeout=timeout,
                                 check_same_thread=check_same_thread)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _VERSION:
            db.close()
            raise StoreError(f"{path} was written by a newer p2phost (delivery database "
                             f"version {version}, this one reads {_VERSION}): upgrade p2phost")
        db.executescript(_SCHEMA)
        _add_columns(db)
        db.execute(f"PRAGMA user_version={_VERSION}")
    except sqlite3.Error as exc:
        raise store_error(path, exc) from exc
    return db


#: Columns peer_address gained after its first release, each with a default.
_ADDED = {"seen": "REAL NOT NULL DEFAULT 0", "dialled": "INTEGER NOT NULL DEFAULT 0"}


def _add_columns(db: sqlite3.Connection) -> None:
    # A database made before peer_address had these. A column added with a default
    # leaves the version as it was: a p2phost that does not know the column writes rows
    # without it (seen 0, the first forgotten; dialled 0, as if it only dialled in), and
    # loses nothing.
    have = {column[1] for column in db.execute("PRAGMA table_info(peer_address)")}
    for name, kind in _ADDED.items():
        if name in have:
            continue
        try:
            db.execute(f"ALTER TABLE peer_address ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # (another connection added it meanwhile)
                raise


def open_connections(path: Path | None
                     ) -> tuple[sqlite3.Connection, sqlite3.Connection, sqlite3.Connection]:
    """The loop's connections (reads, and quick writes) and the writer thread's, to the
    same database."""
    name = None if path is not None else f"p2phost-delivery-{secrets.token_hex(8)}"
    opened: list[sqlite3.Connection] = []
    try:
        opened.append(open_database(path, memory_name=name, timeout=60.0,
                                    check_same_thread=False))
        opened.append(open_database(path, memory_name=name))
        opened.append(open_database(path, memory_name=name))  # quick writes
    except BaseException:
        for db in opened:
            db.close()
        raise
    writer, reader, quick = opened
    return reader, writer, quick


#: A write, run inside a transaction.
Op = Callable[[sqlite3.Connection], Any]


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
