"""The node's delivery database (SQLite, ``.p2phost/delivery.db``) and its batched commits.

One file holds everything acknowledged delivery must not lose: the sender's outbox, the
receiver's dedupe window, messages waiting for a delayed retry, the dead letters, and
the apps' durable state. WAL mode with ``synchronous=NORMAL``: a committed transaction
survives the process being killed (not a power cut: docs/delivery.md).

Writes go through a :class:`Committer`, which joins everything submitted during one
turn of the event loop into one transaction, so a burst of messages costs one commit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from p2phost_sdk import P2PHostError

log = logging.getLogger("p2phost.delivery")

DATABASE_NAME = "delivery.db"
_VERSION = 1
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


def sql_id(message_id: int) -> int:
    """A u64 message id as SQLite's signed 64-bit integer (and :func:`wire_id` back)."""
    return message_id - (1 << 64) if message_id >= 1 << 63 else message_id


def wire_id(stored: int) -> int:
    """The u64 message id of a stored one."""
    return stored + (1 << 64) if stored < 0 else stored


def open_database(path: Path | None) -> sqlite3.Connection:
    """The delivery database at ``path`` (created if needed); in memory when None."""
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None,
                             timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _VERSION:
            db.close()
            raise StoreError(f"{path} was written by a newer p2phost (delivery database "
                             f"version {version}, this one reads {_VERSION}): upgrade p2phost")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_VERSION}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the delivery database {path}: {exc} (is the disk "
                         "full, or the file damaged? move it aside to start afresh)") from exc
    return db


Op = Callable[[sqlite3.Connection], object]


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


class Committer:
    """Runs the writes submitted during one loop turn in one transaction.

    ``then`` callbacks run after the commit, in order; when the transaction fails the
    batch is rolled back and ``failed`` callbacks run instead (what they stood for,
    e.g. an acknowledgement, is then not given, so the message comes again).
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._ops: list[tuple[Op, Callable[[], None] | None, Callable[[], None] | None]] = []
        self._handle: asyncio.Handle | None = None

    def submit(self, op: Op, then: Callable[[], None] | None = None,
               failed: Callable[[], None] | None = None) -> None:
        """Run ``op`` in the next transaction, then ``then`` (or ``failed``)."""
        self._ops.append((op, then, failed))
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def write(self, op: Op) -> asyncio.Future[None]:
        """Run ``op`` in the next transaction; the future is done once it is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def failed() -> None:
            if not done.done():
                done.set_exception(StoreError("the delivery database could not be written "
                                              "(see the log)"))

        def then() -> None:
            if not done.done():
                done.set_result(None)

        self.submit(op, then, failed)
        return done

    def flush(self) -> None:
        """Commit what was submitted, now."""
        self._handle = None
        ops, self._ops = self._ops, []
        if not ops:
            return
        try:
            with transaction(self.db):
                for op, _, _ in ops:
                    op(self.db)
        except Exception as exc:
            log.error("the delivery database failed; %d writes were rolled back (their "
                      "messages are not acknowledged and will come again): %s: %s",
                      len(ops), type(exc).__name__, exc)
            for _, _, failed in ops:
                if failed is not None:
                    failed()
            return
        for _, then, _ in ops:
            if then is not None:
                try:
                    then()
                except Exception:  # one caller's bug must not keep the others waiting
                    log.exception("after a delivery commit")

    def close(self) -> None:
        """Commit what is left and stop."""
        if self._handle is not None:
            self._handle.cancel()
        self.flush()
