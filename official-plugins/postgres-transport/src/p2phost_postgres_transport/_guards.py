"""What guards a node's reader against its inbox table and its server: records refused
unread (a row larger than the node reads), and the deadline of the reader's statements.

Anyone who may insert rows into the inbox table can make a body as large as ``bytea``
allows (1 GB). The claim returns each body's size (``octet_length`` reads only the
stored length), so such a row's body never leaves the server: its first bytes go to the
connection it is for, which refuses the frame as too large (and acknowledges it: the
row is deleted). Refusals are counted; a flood of them logs a line every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from p2phost_sdk.inbox import Medium, MediumUnavailable

from ._sql import DELETE, HEAD

_LOG_EVERY = 10.0  # seconds between log lines about refused records


class Refusals:
    """How many records were refused for their size, logged at most every 10 s."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        #: Records refused unread so far.
        self.count = 0
        self._logged = -_LOG_EVERY

    async def refuse(self, medium: Medium, connection: psycopg.AsyncConnection[Any],
                     row_id: int, size: int) -> None:
        """Row ``row_id`` of ``size`` bytes is over ``medium.max_read_size``: hand its
        head to the medium's ``too_large`` (or delete it, when nobody takes it)."""
        self.count += 1
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY:
            self._logged = now
            self._log.warning(
                "refused a record of %d bytes in this node's inbox on %s without reading it: "
                "over the %d bytes it reads (%d refused so far)\n"
                "fix: raise max-frame-size in [node] of p2phost.toml on this node if its "
                "peers send such messages", size, medium.url, medium.max_read_size, self.count)
        row = await (await connection.execute(HEAD, (row_id,), binary=True)).fetchone()
        if row is not None and medium.too_large is not None:
            medium.too_large(bytes(row[0]), size, row_id)
        elif row is not None:
            await connection.execute(DELETE, (row_id,))


@contextlib.asynccontextmanager
async def with_deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """Statements within ``seconds``, else :class:`MediumUnavailable` (the reader then
    logs the loss and connects again): a server that vanished without closing the socket
    (a killed host, a cut network) answers nothing, and TCP would wait for hours."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise MediumUnavailable(f"{what}: no answer within {seconds:g}s") from None
