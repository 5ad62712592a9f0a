"""Records stored for a peer that may not be running (retention limits checked in the
same transaction), and the inbox commands (``p2phost inbox list|stats|purge|delete``)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from p2phost_sdk import TransportError
from p2phost_sdk.inbox import InboxFull, MediumUnavailable, UnknownInbox

from ._sql import APPEND


def notify_channel(name: str) -> str:
    """The LISTEN/NOTIFY channel of inbox ``name`` (an identifier under 63 bytes)."""
    return "p2phost_" + hashlib.sha256(name.encode()).hexdigest()[:24]


class StoredRecords:
    """The part of :class:`~._medium.PostgresMedium` that stores and administers inboxes."""

    url: str
    _store_lock: asyncio.Lock
    _storer: psycopg.AsyncConnection[Any] | None

    if TYPE_CHECKING:  # the medium's
        async def _connect(self, *, flushed: bool = True) -> psycopg.AsyncConnection[Any]: ...
        async def _execute(self, query: str, args: tuple[Any, ...]) -> Any: ...

    async def store(self, name: str, records: Sequence[bytes]) -> None:
        """In one transaction: expire the inbox's rows older than its ``max_age``
        (counted), refuse if the records would pass ``max_messages`` or ``max_bytes``,
        else insert them and notify the reader."""
        full = ""
        try:
            # One transaction at a time on the writer connection (concurrent sends).
            async with self._store_lock:
                full = await self._store(name, records)
        except psycopg.OperationalError as exc:
            raise MediumUnavailable(f"PostgreSQL at {self.url}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:
            raise TransportError(f"PostgreSQL at {self.url} refused records: "
                                 f"{str(exc).strip()}") from exc
        if full:
            raise InboxFull(f"the inbox of {name} on {self.url} is full ({full}): nothing "
                            "was stored; it empties as that node runs (its operator can "
                            "raise the limit in [config.postgres-transport], or `p2phost "
                            "inbox purge`)")

    async def _store(self, name: str, records: Sequence[bytes]) -> str:
        full = ""
        # A connection of its own: a statement of another task on the writer's must not
        # run inside (and roll back with) this transaction.
        if self._storer is None or self._storer.closed or self._storer.broken:
            self._storer = await self._connect()
        connection = self._storer
        async with connection.transaction():
            cursor = await connection.execute(
                "SELECT max_age, max_messages, max_bytes FROM p2phost_inboxes "
                "WHERE name = %s FOR UPDATE", (name,))
            row = await cursor.fetchone()
            if row is None:
                raise UnknownInbox(f"no inbox {name} on {self.url}")
            max_age, max_messages, max_bytes = row
            if max_age:
                gone = await connection.execute(
                    "DELETE FROM p2phost_inbox_records WHERE inbox = %s AND NOT leased "
                    "AND created < now() - make_interval(secs => %s)", (name, max_age))
                if gone.rowcount:
                    await connection.execute(
                        "UPDATE p2phost_inboxes SET expired = expired + %s "
                        "WHERE name = %s", (gone.rowcount, name))
            if records and (max_messages or max_bytes):
                cursor = await connection.execute(
                    "SELECT count(*), coalesce(sum(octet_length(body)), 0) "
                    "FROM p2phost_inbox_records WHERE inbox = %s", (name,))
                count, size = await cursor.fetchone()  # type: ignore[misc]
                if max_messages and count + len(records) > max_messages:
                    full = f"max-messages = {max_messages} waiting records"
                elif max_bytes and size + sum(map(len, records)) > max_bytes:
                    full = f"max-bytes = {max_bytes} bytes"
            if records and not full:
                await connection.execute(APPEND, {
                    "inbox": name, "bodies": list(records),
                    "channel": notify_channel(name)})
        return full

    async def create_inbox(self, name: str) -> None:
        """Register the inbox: records inserted before the node first runs wait there."""
        await self._execute("INSERT INTO p2phost_inboxes (name) VALUES (%s) "
                            "ON CONFLICT DO NOTHING", (name,))

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """Rows and their bytes."""
        cursor = await self._execute(
            "SELECT (SELECT count(*) FROM p2phost_inboxes WHERE name = %s), count(*), "
            "coalesce(sum(octet_length(body)), 0), "
            "(SELECT coalesce(max(expired), 0) FROM p2phost_inboxes WHERE name = %s) "
            "FROM p2phost_inbox_records WHERE inbox = %s", (name, name, name))
        exists, records, size, expired = await cursor.fetchone()
        return {"exists": bool(exists), "records": int(records), "bytes": int(size),
                "expired": int(expired)}

    async def peek(self, name: str, limit: int) -> list[tuple[bytes, float | None]]:
        """The oldest rows, with the time each was inserted."""
        cursor = await self._execute(
            "SELECT body, extract(epoch FROM created)::float8 FROM p2phost_inbox_records "
            "WHERE inbox = %s ORDER BY id LIMIT %s", (name, limit))
        return [(bytes(body), float(when)) for body, when in await cursor.fetchall()]

    async def purge_inbox(self, name: str) -> int | None:
        """Delete the inbox's rows (not those leased by its running reader)."""
        cursor = await self._execute(
            "DELETE FROM p2phost_inbox_records WHERE inbox = %s AND NOT leased", (name,))
        return int(cursor.rowcount)

    async def delete_inbox(self, name: str) -> bool:
        """Delete the inbox and its rows."""
        cursor = await self._execute("DELETE FROM p2phost_inboxes WHERE name = %s", (name,))
        return bool(cursor.rowcount)
