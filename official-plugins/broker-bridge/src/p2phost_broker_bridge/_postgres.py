"""PostgreSQL ``NOTIFY`` channels through psycopg: out mappings call ``pg_notify`` (the
payload must be UTF-8 text under 8000 bytes), in mappings ``LISTEN``. NOTIFY keeps nothing
for a listener that is away, so these mappings are at most once; they have no headers, so
loops are told by the echo filter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql

from p2phost_sdk import CodecError

from ._endpoint import Endpoint, Incoming
from ._errors import BrokerUnavailable

_MAX_PAYLOAD = 7999


class PostgresEndpoint(Endpoint):
    """One autocommit connection."""

    _connection: Any = None

    async def open(self) -> None:
        m = self.mapping
        try:
            self._connection = await psycopg.AsyncConnection.connect(
                m.broker, autocommit=True, connect_timeout=max(1, int(self.timeout)))
            if m.direction == "in":
                await self._connection.execute(sql.SQL("LISTEN {}").format(
                    sql.Identifier(m.name)))
        except (OSError, psycopg.Error) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot use PostgreSQL for {m.where}: {exc}") from exc

    async def publish(self, payload: bytes) -> None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("a NOTIFY payload is text: this one is not UTF-8 (use codec "
                             "json or text)") from None
        if len(payload) > _MAX_PAYLOAD or "\x00" in text:
            raise CodecError(f"a NOTIFY payload is text under 8000 bytes without NUL: this "
                             f"one has {len(payload)} bytes")
        self.echo.remember(payload)
        await self._connection.execute("SELECT pg_notify(%s, %s)", (self.mapping.name, text))

    async def receive(self) -> AsyncIterator[Incoming]:
        async for notify in self._connection.notifies():
            data = notify.payload.encode("utf-8")
            yield Incoming(data, self.echo.echo(data))
        raise BrokerUnavailable(f"PostgreSQL closed the connection ({self.mapping.where})")

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None
