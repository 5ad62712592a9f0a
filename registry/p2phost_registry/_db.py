"""One database connection behind a lock, for SQLite or PostgreSQL, with migrations.

The registry is read-mostly and serves reads from an in-memory cache, so one connection
per process is enough; a lock makes every transaction run alone in this process. Callers
write SQL with ``?`` placeholders; the PostgreSQL side rewrites them to ``%s``.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._errors import DuplicateKey, StoreError
from ._migrations import MIGRATIONS, SCHEMA_VERSION

Row = tuple[Any, ...]


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds and a ``Z``, as PEP 700 wants."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Tx:
    """The cursor of one transaction."""

    def __init__(self, conn: Any, postgres: bool, channel: str = "", sender: str = "") -> None:
        self._conn = conn
        self._postgres = postgres
        self.channel = channel
        #: The payload of this process's change notifications, so it can skip its own.
        self.sender = sender
        #: The generation this transaction bumped the store to, if it did.
        self.bumped: int | None = None

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        if self._postgres:
            import psycopg

            try:
                return self._conn.execute(sql.replace("?", "%s"), params)
            except psycopg.errors.UniqueViolation as exc:
                raise DuplicateKey(str(exc)) from exc
        try:
            return self._conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    def files_lock(self, *, exclusive: bool) -> None:
        """Hold the files directory for this transaction: shared to publish, exclusive to
        clean up orphans (so a cleanup never removes a file another server is committing).

        SQLite needs nothing: BEGIN IMMEDIATE already serialises every writer.
        """
        if self._postgres:
            lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            self._execute(f"SELECT {lock}(8471)", ())

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        return [tuple(r) for r in self._execute(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        row = self._execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        return int(self._execute(sql, params).rowcount)


def bump_generation(tx: Tx) -> None:
    """Record that published data changed: other processes drop their cached pages.

    On PostgreSQL the commit also notifies every server listening on the store's channel,
    so they drop them at once; SQLite servers see the generation within a second.
    """
    tx.run(
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
        "WHERE key = 'generation'"
    )
    row = tx.one("SELECT value FROM meta WHERE key = 'generation'")
    tx.bumped = int(row[0]) if row else None
    if tx.channel:
        tx.one("SELECT pg_notify(?, ?)", (tx.channel, tx.sender))


class Database:
    """A connection to the store's database; ``url`` None means SQLite in ``data_dir``."""

    def __init__(self, url: str | None, data_dir: Path) -> None:
        self.url = url
        self.postgres = bool(url) and str(url).startswith(("postgresql://", "postgres://"))
        if url and not self.postgres and not url.startswith("sqlite:///"):
            raise StoreError(
                f"--database {url!r}: unsupported URL; use postgresql://HOST/DB, "
                "sqlite:///PATH, or leave it out for SQLite in --data"
            )
        self._sqlite_path = data_dir / "registry.sqlite3"
        if url and url.startswith("sqlite:///"):
            # SQLAlchemy's convention: sqlite:///relative/path, sqlite:////absolute/path.
            self._sqlite_path = Path(url.removeprefix("sqlite:///"))
        self._lock = threading.RLock()
        self._conn: Any = None
        #: The LISTEN/NOTIFY channel of this database and schema (PostgreSQL only).
        self.channel = ""
        #: Tells this process's change notifications from those of other processes.
        self.sender = secrets.token_hex(8)
        #: The generation this process's last committed change left the store at: a
        #: watcher that reads it again has nothing to drop (the writer already did).
        self.written_generation: int | None = None
        self._connect()
        self._migrate()

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return "postgresql" if self.postgres else "sqlite"

    def _connect(self) -> None:
        if self.postgres:
            import psycopg

            try:
                self._conn = psycopg.connect(str(self.url), connect_timeout=10)
                where = self._conn.execute(
                    "SELECT current_database() || '.' || current_schema()").fetchone()
                self._conn.commit()
            except psycopg.OperationalError as exc:
                raise StoreError(
                    f"cannot connect to the database {self.url}: {str(exc).strip()}; "
                    "check that PostgreSQL runs and the URL names an existing database"
                ) from exc
            # One channel per database and schema: stores side by side never wake each other.
            digest = hashlib.blake2b(str(where[0]).encode(), digest_size=8).hexdigest()
            self.channel = f"p2phost_registry_{digest}"
            return
        try:
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so that two
            # processes writing the same file serialise instead of failing at COMMIT.
            conn = sqlite3.connect(
                self._sqlite_path, check_same_thread=False, isolation_level=None, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store {self._sqlite_path}: {exc}") from exc
        self._conn = conn

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Run a block as one transaction: committed if it returns, rolled back if it raises."""
        with self._lock:
            if self.postgres:
                if self._conn.closed or self._conn.broken:
                    self._connect()
                with self._conn.transaction():
                    tx = Tx(self._conn, True, self.channel, self.sender)
                    yield tx
            else:
                self._conn.execute("BEGIN IMMEDIATE")
                tx = Tx(self._conn, False)
                try:
                    yield tx
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            if tx.bumped is not None:
                self.written_generation = tx.bumped

    def _migrate(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        with self.transaction() as tx:
            if self.postgres:
                # Two processes starting on one fresh database must not both migrate it.
                tx.one("SELECT pg_advisory_xact_lock(8470)")
            tx.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied TEXT NOT NULL)"
            )
            done = {int(r[0]) for r in tx.all("SELECT version FROM schema_migrations")}
            if done and max(done) > SCHEMA_VERSION:
                raise StoreError(
                    f"the store's schema is version {max(done)}, newer than this p2phost "
                    f"understands ({SCHEMA_VERSION}); upgrade p2phost"
                )
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    tx.run(statement.replace("{serial}", serial))
                tx.run(
                    "INSERT INTO schema_migrations (version, description, applied) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, now_iso()),
                )

    def schema_version(self) -> int:
        """The newest migration applied to this database."""
        with self.transaction() as tx:
            row = tx.one("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
