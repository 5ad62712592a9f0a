"""What guards a node's reader against its inbox table and its server: records refused
unread (a row larger than the node reads), and the deadline of the reader's statements.

Every statement of the reader has a deadline: ``statement-timeout`` seconds, plus
``seconds-per-mib`` for each MiB it may bring (a claim: up to 32 MiB of small bodies; a
large body fetched alone: its size). A legitimate large message on a slow link is not
cut, and a server gone without closing the socket is still noticed.

Anyone who may insert rows into the inbox table can make a body as large as ``bytea``
allows (1 GB). The claim returns each body's size (``octet_length`` reads only the
stored length), so such a row's body never leaves the server: its first bytes go to the
connection it is for, which refuses the frame as too large (and acknowledges it: the
row is deleted). Refusals are counted; a flood of them logs a line every 10 seconds, and
how many more there were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from p2phost_sdk import ConfigError, RateLimitedLog
from p2phost_sdk.inbox import Medium, MediumUnavailable

from ._notifies import Notifications
from ._sql import DELETE, HEAD


class Refusals:
    """Records refused for their size: counted, and logged as a
    :class:`~p2phost_sdk.RateLimitedLog` (a line every 10 s, then how many were not)."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = RateLimitedLog(log, "refused records", burst=1)

    @property
    def count(self) -> int:
        """Records refused unread so far."""
        return self._log.count

    async def refuse(self, medium: Medium, reader: ReaderStatements, row_id: int,
                     size: int) -> None:
        """Row ``row_id`` of ``size`` bytes is over ``medium.max_read_size``: hand its
        head to the medium's ``too_large`` (or delete it, when nobody takes it)."""
        self._log.warning(
            "refused a record of %d bytes in this node's inbox on %s without reading it: "
            "over the %d bytes it reads\n"
            "fix: raise max-frame-size in [node] of p2phost.toml on this node if its "
            "peers send such messages", size, medium.url, medium.max_read_size)
        rows = await reader.rows(HEAD, (row_id,))
        if rows and medium.too_large is not None:
            medium.too_large(bytes(rows[0][0]), size, row_id)
        elif rows:
            await reader.rows(DELETE, (row_id,))


@dataclass(frozen=True)
class Deadline:
    """How long a statement of the reader may take: ``floor`` seconds, plus ``per_mib``
    for each MiB of the most it may bring (``statement-timeout``, ``seconds-per-mib``)."""

    floor: float = 10.0
    per_mib: float = 0.5

    @classmethod
    def from_config(cls, config: Mapping[str, Any], plugin: str) -> Deadline:
        """From ``statement-timeout`` and ``seconds-per-mib`` (defaults when missing); a
        value that bounds nothing (not finite, or not above 0) is a ConfigError."""
        floor = float(config.get("statement-timeout", cls.floor))
        per_mib = float(config.get("seconds-per-mib", cls.per_mib))
        if not (math.isfinite(floor) and floor > 0):
            raise ConfigError(plugin, "statement-timeout", "seconds above 0", floor)
        if not (math.isfinite(per_mib) and per_mib >= 0):
            raise ConfigError(plugin, "seconds-per-mib", "seconds from 0", per_mib)
        return cls(floor, per_mib)

    def seconds(self, size: int) -> float:
        """The deadline of a statement that may bring ``size`` bytes."""
        return self.floor + self.per_mib * size / (1 << 20)


class ReaderStatements:
    """The statements of the reader's connection, each within its :class:`Deadline`,
    and the notifications of its ``listener`` (a connection of its own that runs no
    statement but LISTEN: a statement's answer would come after every notification
    queued meanwhile, all parsed into memory at once), coalesced
    (:class:`~._notifies.Notifications`)."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], deadline: Deadline,
                 url: str, listener: psycopg.AsyncConnection[Any] | None = None) -> None:
        self.connection = connection
        #: Where the notifications come (``connection`` when there is no other).
        self.listener = listener or connection
        self.deadline = deadline
        self.notifications = Notifications()
        self._what = f"PostgreSQL at {url}"

    async def listen(self, query: Any) -> None:
        """Run ``query`` (LISTEN) on the listener, within the floor of the deadline."""
        async with with_deadline(self.listener, self.deadline.seconds(0), self._what):
            await self.listener.execute(query)

    async def close(self) -> None:
        """Close both connections."""
        for connection in {self.connection, self.listener}:
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    async def rows(self, query: Any, args: tuple[Any, ...] = (), *,
                   size: int = 0) -> list[Any]:
        """Run ``query`` (binary results: bodies as they are, not hex-escaped); its
        rows. ``size``: the most bytes its rows may bring (their deadline)."""
        connection = self.connection
        with self.notifications.during_statement(connection):
            async with with_deadline(connection, self.deadline.seconds(size), self._what):
                cursor = await connection.execute(query, args, binary=True)
                return await cursor.fetchall() if cursor.description else []


@contextlib.asynccontextmanager
async def with_deadline(connection: psycopg.AsyncConnection[Any], seconds: float,
                        what: str) -> AsyncIterator[None]:
    """Statements on ``connection`` within ``seconds``, else :class:`MediumUnavailable`
    (the reader then logs the loss and connects again): a server that vanished without
    closing the socket (a killed host, a cut network) answers nothing, and TCP would
    wait for hours.

    At the deadline the socket is shut down, which fails the statement at once (psycopg
    reads the end of the stream). Cancelling the waiting task instead would make psycopg
    send a cancel request and wait for the statement to end: up to 10 s more, and for
    nothing when the server is gone. No task is left behind: a timer does it."""
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        _shut_down(connection)

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        yield
    except (psycopg.Error, OSError) as exc:
        if expired:
            raise MediumUnavailable(f"{what}: no answer within {seconds:g}s") from exc
        raise
    finally:
        timer.cancel()
    if expired:  # the answer came as the socket was shut down: the connection is gone
        raise MediumUnavailable(f"{what}: no answer within {seconds:g}s")


def _shut_down(connection: psycopg.AsyncConnection[Any]) -> None:
    """Shut ``connection``'s socket down both ways; its file stays psycopg's to close."""
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=connection.pgconn.socket)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()
