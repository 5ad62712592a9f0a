"""The node's delivery database (SQLite, ``.p2phost/delivery.db``) and its batched commits.

One file holds everything acknowledged delivery must not lose: the sender's outbox, the
receiver's dedupe window, messages waiting for a delayed retry, the dead letters, and
the apps' durable state. WAL mode with ``synchronous=NORMAL``: a committed transaction
survives the process being killed (not a power cut: docs/delivery.md).

Nothing here blocks the event loop. Writes go through a :class:`Committer`: one writer
thread, with a connection of its own, commits what was submitted in one transaction
while the loop goes on; everything submitted meanwhile goes into the next one (group
commit), so a burst of messages, or many senders at once, cost one commit, and each
``send()`` still returns only once its message is committed. The loop reads through its
own connection: in WAL mode a reader never waits for a writer (another process's
``p2phost dead purge`` included: only the writer thread waits for its lock).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        db.execute(f"PRAGMA user_version={_VERSION}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the delivery database {path}: {exc} (is the disk "
                         "full, or the file damaged? move it aside to start afresh)") from exc
    return db


def open_pair(path: Path | None) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The loop's connection (reads) and the writer thread's, to the same database."""
    name = None if path is not None else f"p2phost-delivery-{secrets.token_hex(8)}"
    writer = open_database(path, memory_name=name, timeout=60.0, check_same_thread=False)
    try:
        reader = open_database(path, memory_name=name)
    except BaseException:
        writer.close()
        raise
    return reader, writer


Op = Callable[[sqlite3.Connection], Any]
#: Seconds a lazy write waits for a transaction to ride with.
_LAZY = 0.02
_Entry = tuple[Op, Callable[[], None] | None, Callable[[], None] | None]


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
    """Commits submitted writes in a writer thread, many in one transaction.

    ``op(db)`` runs in the writer thread (it may touch only ``db`` and its own data);
    ``then`` callbacks run on the loop after the commit, in order; when the
    transaction fails the batch is rolled back and ``failed`` callbacks run instead
    (what they stood for, e.g. an acknowledgement, is then not given, so the message
    comes again).
    """

    def __init__(self, db: sqlite3.Connection, writer: sqlite3.Connection) -> None:
        #: The loop's connection, for reads.
        self.db = db
        self._writer = writer
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="p2phost-delivery-writer")
        self._ops: list[_Entry] = []
        self._handle: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._busy = False
        self._urgent = False
        self._idle: asyncio.Event | None = None
        self._closed = False
        #: Transactions committed, and writes in them (group commit: writes >> commits).
        self.commits = 0
        self.writes = 0

    def submit(self, op: Op, then: Callable[[], None] | None = None,
               failed: Callable[[], None] | None = None, *, lazy: bool = False) -> None:
        """Run ``op`` in the next transaction, then ``then`` (or ``failed``).

        A ``lazy`` write (one nobody waits for, like deleting an acknowledged message)
        starts no transaction of its own for a moment: it rides with the next one.
        """
        if self._closed:
            if failed is not None:
                failed()
            return
        self._ops.append((op, then, failed))
        if not lazy:
            self._urgent = True
        if self._busy:
            return
        if lazy:
            if self._handle is None and self._later is None:
                self._later = asyncio.get_running_loop().call_later(_LAZY, self._start)
        elif self._handle is None:
            # Wait for the rest of this loop turn: its writes join the same transaction.
            self._handle = asyncio.get_running_loop().call_soon(self._start)

    def write(self, op: Op) -> asyncio.Future[Any]:
        """Run ``op`` in the next transaction; the future has its result once committed."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        result: list[Any] = []

        def run(db: sqlite3.Connection) -> None:
            result.append(op(db))

        def failed() -> None:
            if not done.done():
                done.set_exception(StoreError("the delivery database could not be written "
                                              "(see the log)"))

        def then() -> None:
            if not done.done():
                done.set_result(result[0] if result else None)

        self.submit(run, then, failed)
        return done

    def _start(self) -> None:
        self._handle = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._busy or not self._ops:
            return
        ops, self._ops = self._ops, []
        self._busy, self._urgent = True, False
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, self._commit, ops)
        future.add_done_callback(lambda f: self._committed(ops, f))

    def _commit(self, ops: list[_Entry]) -> BaseException | None:
        """In the writer thread: one transaction for ``ops``."""
        try:
            with transaction(self._writer):
                for op, _, _ in ops:
                    op(self._writer)
        except Exception as exc:
            return exc
        return None

    def _committed(self, ops: list[_Entry], future: asyncio.Future[BaseException | None]
                   ) -> None:
        self._busy = False
        error = future.exception() if not future.cancelled() else None
        if error is None and not future.cancelled():
            error = future.result()
        if error is not None or future.cancelled():
            log.error("the delivery database failed; %d writes were rolled back (their "
                      "messages are not acknowledged and will come again): %s: %s",
                      len(ops), type(error).__name__, error)
            for _, _, failed in ops:
                if failed is not None:
                    failed()
        else:
            self.commits += 1
            self.writes += len(ops)
            for _, then, _ in ops:
                if then is not None:
                    try:
                        then()
                    except Exception:  # one caller's bug must not keep the others waiting
                        log.exception("after a delivery commit")
        if self._ops and (self._urgent or self._idle is not None):
            self._start()
        elif self._ops:  # only lazy writes: they wait for company a moment
            self._later = asyncio.get_running_loop().call_later(_LAZY, self._start)
        elif self._idle is not None:
            self._idle.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        while self._busy or self._ops:
            self._idle = asyncio.Event()
            if not self._busy:
                self._start()
            await self._idle.wait()

    async def close(self) -> None:
        """Commit what is left, then stop the writer thread."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._later is not None:
            self._later.cancel()
            self._later = None
        await self.flush()
        self._closed = True
        self._thread.shutdown(wait=True)
        self._writer.close()
