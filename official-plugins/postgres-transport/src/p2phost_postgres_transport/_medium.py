"""PostgreSQL as an inbox medium: a table as a durable queue, LISTEN/NOTIFY to wake readers.

Two tables (created on first use): ``p2phost_inboxes`` names the inboxes, and
``p2phost_inbox_records`` holds their records in ``id`` order. Appending inserts the
records and ``pg_notify``-s the inbox's channel in one statement (visible at once, then
waiting for the WAL flush: see APPEND_EARLY); a record for an inbox that does not exist
violates the foreign key, so sending to an unknown peer id fails at once. The reader
claims the oldest free records of its inbox with ``UPDATE ... WHERE id IN (SELECT ...
FOR UPDATE SKIP LOCKED)`` (concurrent readers never take the same row),
marking them leased, and deletes each once the node is done with it. When it starts, and
after a lost connection, it frees its inbox's leased rows: what the node had not finished
is delivered again (after a lost connection, once the server process of the previous one
is gone: a claim given up at its deadline must not commit after that). Between
notifications it looks again every second, so a missed one delays nothing for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from p2phost_sdk import AddressError, TransportError
from p2phost_sdk.inbox import (
    Deliver,
    InboxOptions,
    InboxTransport,
    Medium,
    MediumAddress,
    MediumRefused,
    MediumUnavailable,
    UnknownInbox,
    backoff,
    stop_if_cancelled,
)

from ._backend import ReaderBackend
from ._guards import Deadline, ReaderStatements, Refusals
from ._inboxes import StoredRecords, notify_channel
from ._sql import (
    APPEND,
    APPEND_CREDITS,
    APPEND_EARLY,
    BODY,
    CAN_FLUSH,
    CLAIM,
    FLUSH,
    SCHEMA,
    SCHEMA_CURRENT,
    SCHEMA_LOCK,
)

log = logging.getLogger("p2phost.transport.postgres")
#: The default flow-control window: frames a sender may have stored beyond what the
#: reader took. Twice the SDK's: a sender appends half a window at a time
#: (``split_window``), 256 rows per insert flushed to disk, as with 256 unsplit.
WINDOW = 512
# Rows one claim takes at most: a sender's full default window, claimed at once, which
# then waits for the next notification, not a second claim that finds nothing.
_BATCH = 512
# Bodies up to this size come with the claim (512 of them: 32 MiB at most); a larger one
# is fetched alone when it is delivered, so rows that anyone may insert into the inbox
# never bring 512 large bodies into the node's memory at once.
_CLAIMED_BODY = 64 * 1024
_POLL = 1.0
_CREDIT_WAKES = 64  # wake-ups with only credits before the reader claims their rows anyway
_REFUSALS = ("authentication failed", "does not exist", "no pg_hba.conf entry",
             "permission denied", "password")


def _fix(exc: BaseException) -> str:
    """The ``fix:`` line of the reader's "lost PostgreSQL" warning about ``exc``."""
    if isinstance(exc, MediumUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, UnicodeError):
        return ("fix: none if it does not repeat: a notification on the inbox's channel "
                "could not be decoded (any role that may connect may send one)")
    if isinstance(exc, (psycopg.OperationalError, MediumUnavailable)):
        return ("fix: check that the server runs there and the network to it (or raise "
                "statement-timeout and seconds-per-mib in [config.postgres-transport] for a "
                "slow one)")
    return ("fix: GRANT SELECT, UPDATE, DELETE ON p2phost_inbox_records TO the node's role, "
            "and point the node at a server that accepts writes (not a standby)")


class PostgresMedium(StoredRecords, Medium):
    """One node's link to one PostgreSQL database."""

    max_record_size = (1 << 30) - 1  # bytea's limit
    # A window's insert waits for the disk: the second half goes in while the reader
    # takes the first (a claim takes both halves' rows at most: _BATCH).
    split_window = True

    def __init__(self, address: MediumAddress, deadline: Deadline | None = None,
                 state_dir: Path | None = None) -> None:
        if not address.parts.path.strip("/"):
            form = "postgresql://USER@HOST:PORT/DATABASE"
            raise AddressError(address.public, f"no database (expected {form})", expected=form)
        self.url = address.public
        self._connect_url = address.url
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._storer: psycopg.AsyncConnection[Any] | None = None
        #: Acknowledgements (DELETEs) and flow-control credits, on a connection of their
        #: own whose commits do not wait for the disk (see _listen): frames never queue
        #: behind them.
        self._unflushed: psycopg.AsyncConnection[Any] | None = None
        self._store_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._inbox = ""
        #: How long the reader's statements may take (``statement-timeout``,
        #: ``seconds-per-mib``).
        self.deadline = deadline or Deadline()
        #: Claims so far (each a statement; a flood of notifications must not add any).
        self.claims = 0
        #: Whether appends make frames visible before they are on disk, then wait for
        #: the flush (APPEND_EARLY and FLUSH; APPEND where this role may not FLUSH).
        self._early = False
        self.refused = Refusals(log)
        #: The server process of the latest reader connection (noted in ``state_dir``,
        #: if given, when the inbox opens).
        self.backend = ReaderBackend()
        self._state_dir = state_dir

    async def _connect(self, *, flushed: bool = True, name: str = "p2phost"
                       ) -> psycopg.AsyncConnection[Any]:
        """A new connection (its ``application_name``: ``name``); ``flushed=False``: its
        commits do not wait for the WAL to reach the disk (for leases and deletes only,
        see :meth:`_listen`)."""
        url = self._connect_url
        if not flushed:
            # At connect time, not a statement after it: no round trip, and nothing
            # that waits without a deadline once connected (the URL's options kept).
            options = conninfo_to_dict(url).get("options") or ""
            url = make_conninfo(url, options=f"{options} -c synchronous_commit=off".strip())
        try:
            return await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5, application_name=name)
        except psycopg.OperationalError as exc:
            # A refusal at connect time carries no SQLSTATE here: the server's FATAL says it.
            text = str(exc).strip()
            if any(reason in text for reason in _REFUSALS):
                raise MediumRefused(f"PostgreSQL at {self.url} refused the connection: "
                                    f"{text.splitlines()[-1]}") from exc
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {text}") from exc

    async def _unflushed_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._unflushed is None or self._unflushed.closed or self._unflushed.broken:
            self._unflushed = await self._connect(flushed=False)
        return self._unflushed

    async def _write_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._writer is None or self._writer.closed or self._writer.broken:
            self._writer = await self._connect()
        return self._writer

    async def connect(self) -> None:
        """Connect, and create (or bring up to date) the tables if they are not yet."""
        connection = await self._write_connection()
        try:
            cursor = await connection.execute(CAN_FLUSH)
            row = await cursor.fetchone()
            self._early = bool(row and row[0])
            cursor = await connection.execute(SCHEMA_CURRENT)
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                await connection.execute(SCHEMA)
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {exc}") from exc
        except psycopg.Error as exc:
            raise MediumRefused(f"PostgreSQL at {self.url}: cannot create the inbox tables: "
                                f"{str(exc).strip()}") from exc

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        """Register the inbox and start reading it."""
        self._inbox = name
        digest = hashlib.sha256(f"{self.url}#{name}".encode()).hexdigest()[:16]
        self.backend = ReaderBackend(
            None if self._state_dir is None else self._state_dir / f"postgres-reader-{digest}",
            f"p2phost reader {digest}")
        retention = self.retention
        try:
            await (await self._write_connection()).execute(
                "INSERT INTO p2phost_inboxes (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            await (await self._write_connection()).execute(
                "UPDATE p2phost_inboxes SET max_age = %s, max_messages = %s, max_bytes = %s "
                "WHERE name = %s", (retention.max_age, retention.max_messages,
                                    retention.max_bytes, name))
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {exc}") from exc
        if retention.max_age:
            await self.store(name, [])  # expire what is old before reading
        reader = await self._listen()
        self._reader = asyncio.get_running_loop().create_task(
            self._read(reader, deliver), name=f"postgres reader {name[:12]}")

    async def _listen(self) -> ReaderStatements:
        # Leases (the claiming UPDATE), acknowledgements (DELETE) and credits need not
        # be on disk when they return: a lease lost with a crash of the server is one
        # this reset makes anyway, a deleted record that comes back is delivered again
        # and dropped as a copy (the connection's sequence numbers, the journal), and
        # credits are sent again after the reconnect that follows (``reconnects``). Not
        # waiting for the WAL flush takes disk writes off each record's way (appends of
        # frames and letters, which must be durable, still wait for theirs).
        # Notifications come on a connection of their own, which runs no statement: a
        # flood backs up in the server's queue while the reader's statements run, and
        # is read one socket read at a time (see ReaderStatements).
        listener = await self._connect(flushed=False)
        try:
            connection = await self._connect(flushed=False, name=self.backend.name)
        except BaseException:
            await listener.close()
            raise
        reader = ReaderStatements(connection, self.deadline, self.url, listener)
        try:
            if listener.info.parameter_status("server_encoding") == "SQL_ASCII":
                # Such a database checks no text: a payload byte over 0x7f would fail
                # psycopg's decoding (ASCII) of the notification, any role may send one,
                # and it cannot be read past. In LATIN1 every byte decodes (the server
                # converts nothing from SQL_ASCII); payloads that matter are hex.
                await reader.listen("SET client_encoding = 'LATIN1'")
            await reader.listen(sql.SQL("LISTEN {}").format(
                sql.Identifier(notify_channel(self._inbox))))
            # The previous reader connection's claim must not commit after the reset.
            await self.backend.end_previous(reader, self.deadline.floor / 2)
            # One reader per inbox: what is leased now was taken by an earlier run of
            # this node (or by this one before its connection was lost). Deliver it again.
            await reader.rows(
                "UPDATE p2phost_inbox_records SET leased = false WHERE inbox = %s AND leased",
                (self._inbox,))
        except (psycopg.Error, UnicodeError, MediumUnavailable) as exc:
            await reader.close()
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {exc}") from exc
        return reader

    async def _read(self, reader: ReaderStatements | None, deliver: Deliver) -> None:
        failures = 0
        try:
            while True:
                try:
                    if reader is None:
                        reader = await self._listen()
                        self.reconnects += 1
                        log.info("reconnected to PostgreSQL at %s", self.url)
                    failures = 0
                    await self._drain(reader, deliver)
                except (psycopg.Error, UnicodeError, MediumUnavailable, MediumRefused) as exc:
                    # Any of them, not only a lost socket: a privilege revoked, a server
                    # that became read-only (a failover) or a notification psycopg cannot
                    # decode must not end the reader (nothing would read the inbox again).
                    if failures == 0:
                        log.warning("lost PostgreSQL at %s (reconnecting): %s: %s\n%s",
                                    self.url, type(exc).__name__, exc, _fix(exc))
                    if reader is not None:
                        await reader.close()
                    reader = None
                stop_if_cancelled()
                await asyncio.sleep(backoff(failures))
                failures += 1
        finally:
            if reader is not None:
                await reader.close()

    async def _drain(self, reader: ReaderStatements, deliver: Deliver) -> None:
        while True:
            self.claims += 1
            rows = sorted(await reader.rows(CLAIM, (self._inbox, _BATCH, _CLAIMED_BODY),
                                            size=_BATCH * _CLAIMED_BODY),
                          key=lambda row: row[0])
            stop_if_cancelled()
            for row_id, body, size in rows:
                if self.max_read_size and size > self.max_read_size:
                    await self.refused.refuse(self, reader, row_id, size)
                    continue
                if body is None:
                    found = await reader.rows(BODY, (row_id,), size=size)
                    if not found:
                        continue  # removed meanwhile (`p2phost inbox purge`)
                    body = found[0][0]
                await deliver(bytes(body), row_id)
            if len(rows) < _BATCH:
                # Wake-ups that brought nothing but credits (taken from the payloads)
                # need no claim: their rows wait for the next one (at most so many
                # wake-ups later, or the poll), which takes and drops them.
                for _ in range(_CREDIT_WAKES):
                    if not await self._notified(reader, deliver):
                        break

    @staticmethod
    async def _notified(reader: ReaderStatements, deliver: Deliver) -> bool:
        """Wait for notifications (up to ``_POLL``) and take all those arrived; deliver
        the credits in their payloads. True if some came and none said that records
        were appended (however many did: one claim takes them all)."""
        notifications = reader.notifications
        # Counted from the last wake-up, not from now: credits read during the claim
        # since then are news too (else each claim that saw some would make the next).
        before = notifications.taken
        await notifications.wait(reader.listener, _POLL)
        appended, credits = notifications.take()
        for record in credits:
            await deliver(record, None)
        return notifications.received > before and not appended

    async def _execute(self, query: str, args: tuple[Any, ...]) -> Any:
        try:
            return await (await self._write_connection()).execute(query, args)
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {str(exc).strip()}") from exc

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        """Insert the records in order and notify the inbox, in one statement; return
        once they are on disk."""
        connection = await self._write_connection()
        if not self._early or len(records) == 1:
            # A lone record: one round trip, rather than two and a reader a flush ahead.
            await self._append(connection, name, records, APPEND)
            return
        await self._append(connection, name, records, APPEND_EARLY)
        try:
            await connection.execute(FLUSH)
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {str(exc).strip()}") from exc
        except psycopg.ProgrammingError as exc:
            # Refused since connect (EXECUTE revoked): no outage, so not MediumUnavailable
            # (the endpoint would log "cannot reach" and retry after a back-off). Append
            # again at once, flushed in one statement: the reader drops the copies of what
            # just went in. This medium appends that way from now on.
            self._early = False
            log.warning("PostgreSQL at %s refused pg_logical_emit_message (%s): appends "
                        "now wait for the disk before the reader sees them\nfix: GRANT "
                        "EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) "
                        "TO the node's role, then restart the node", self.url,
                        str(exc).strip().splitlines()[0])
            await self._append(connection, name, records, APPEND)

    async def append_credits(self, name: str, records: Sequence[bytes]) -> None:
        """As :meth:`append`, on the connection that does not wait for the disk."""
        await self._append(await self._unflushed_connection(), name, records,
                           APPEND_CREDITS)

    async def _append(self, connection: psycopg.AsyncConnection[Any], name: str,
                      records: Sequence[bytes], query: str) -> None:
        try:
            await connection.execute(query, {"inbox": name, "bodies": list(records),
                                               "channel": notify_channel(name)})
        except psycopg.errors.ForeignKeyViolation:
            raise UnknownInbox(f"no inbox {name} on {self.url}") from None
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:
            raise TransportError(f"PostgreSQL at {self.url} refused records: "
                                 f"{str(exc).strip()}") from exc

    def record_of(self, token: Any) -> Hashable | None:
        """A row's id: every delivery of the row has it (one DELETE settles them all)."""
        return token if isinstance(token, int) else None

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """Delete the records: done."""
        try:
            await (await self._unflushed_connection()).execute(
                "DELETE FROM p2phost_inbox_records WHERE id = ANY(%b)", (list(tokens),))
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {exc}") from exc

    async def close(self, *, delete_inbox: bool) -> None:
        """Stop reading; delete a deleted inbox with its records; disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        try:
            if delete_inbox and self._inbox:
                await self.backend.forget()
                await (await self._write_connection()).execute(
                    "DELETE FROM p2phost_inboxes WHERE name = %s", (self._inbox,))
        except (psycopg.Error, MediumUnavailable, MediumRefused) as exc:
            log.debug("could not delete the inbox on %s: %s", self.url, exc)
        finally:
            for connection in (self._writer, self._storer, self._unflushed):
                if connection is not None:
                    with contextlib.suppress(psycopg.Error):
                        await connection.close()


class PostgresTransport(InboxTransport):
    """``postgresql://USER@HOST:PORT/DATABASE``: node inboxes as rows of a queue table."""

    schemes = ("postgresql", "postgres")
    default_port = 5432
    address_example = "postgresql://USER@HOST:PORT/DATABASE"

    def __init__(self, *, peer_id: str, max_frame_size: int = 16 * 1024 * 1024,
                 state_dir: Path | None = None, options: InboxOptions | None = None,
                 deadline: Deadline | None = None) -> None:
        super().__init__(peer_id=peer_id, max_frame_size=max_frame_size, state_dir=state_dir,
                         options=options or InboxOptions(window=WINDOW))
        self.deadline = deadline or Deadline()

    def make_medium(self, address: MediumAddress) -> Medium:
        """A PostgreSQL medium for ``address``."""
        return PostgresMedium(address, self.deadline, self.state_dir)
