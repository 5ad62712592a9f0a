"""The notifications that wake a node's reader, coalesced: whatever their number, a wake
costs one claim and holds a bounded amount of memory.

Any role that may connect to the database may ``NOTIFY`` the reader's channel, as often
as it likes. psycopg keeps every notification it reads while a statement runs in a
queue of its own (unbounded) and hands them out one by one; taking one per wake-up, a
flood of N notifications cost N claims and their memory. Here a statement's
notifications go to :meth:`Notifications.note` instead (a handler registered only while
statements run on the connection that listens), and each wake-up takes every notification already
arrived: "records were appended" is one flag, credits (in their payloads) are kept once
each and at most ``_CREDITS_KEPT`` of them (past that, the claim brings their rows).

Notifications come on a connection of their own that runs no statements (see
``ReaderStatements``): the server sends the notifications queued during a statement
before its answer, and libpq would parse them all into its own list (unbounded) before
the first reached ``note``. Read by ``notifies()`` alone, they come one socket read at
a time, and a flood waits in the server's queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from p2phost_sdk.inbox import is_credit

# Credits kept from payloads between two wake-ups: a sender's credit is also a row, so
# one dropped past this bound comes with the next claim.
_CREDITS_KEPT = 256
# Notifications taken in one wake-up at most: past it the reader claims, then wakes
# again at once (a flood cannot keep it reading notifications forever).
_PER_WAKE = 4096
# A credit's payload: at most 3000 bytes as hex (APPEND_CREDITS).
_CREDIT_PAYLOAD = 6000


class Notifications:
    """What the notifications of one reader's channel said since it last looked."""

    def __init__(self) -> None:
        #: Records were appended (an empty payload): the reader claims.
        self.appended = False
        #: Notifications seen so far (for tests and stats).
        self.received = 0
        #: ``received`` at the last :meth:`take`: those since are news, including
        #: those read during the statements in between (a claim).
        self.taken = 0
        self._credits: dict[bytes, None] = {}

    def note(self, notify: psycopg.Notify) -> None:
        """Take one notification (also psycopg's handler while a statement runs)."""
        self.received += 1
        payload = notify.payload
        if not payload:
            self.appended = True
            return
        if len(payload) > _CREDIT_PAYLOAD:
            return
        try:
            record = bytes.fromhex(payload)
        except ValueError:
            return
        # Credits only: NOTIFY needs no privilege at all, so a payload is no record of
        # the inbox (a frame, an OPEN, a letter) for a role that may not insert rows; a
        # forged credit is bounded by the window checks.
        if not is_credit(record) or record in self._credits:
            return
        if len(self._credits) < _CREDITS_KEPT:
            self._credits[record] = None
        else:
            self.appended = True  # its row comes with the claim

    def take(self) -> tuple[bool, list[bytes]]:
        """Whether records were appended, and the credits; both forgotten."""
        appended, credits = self.appended, list(self._credits)
        self.appended = False
        self.taken = self.received
        self._credits.clear()
        return appended, credits

    @contextlib.contextmanager
    def during_statement(self, connection: psycopg.AsyncConnection[Any]) -> Iterator[None]:
        """Notifications that psycopg reads while a statement runs come here, not to its
        own queue (which has no bound)."""
        connection.add_notify_handler(self.note)
        try:
            yield
        finally:
            connection.remove_notify_handler(self.note)

    async def wait(self, connection: psycopg.AsyncConnection[Any], timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notification (not at all if one came
        during the last statements); while reads bring several (a flood), take those
        already arrived too, up to ``_PER_WAKE``, without waiting more."""
        start = before = self.received
        if not self.appended and not self._credits:
            await self._read(connection, timeout, stop_after=1)
        # A wake-up by one notification (records appended, or a credit) reads no more:
        # one poll of the socket costs a turn of the event loop.
        while self.received - before > 1 and self.received - start < _PER_WAKE:
            before = self.received
            await self._read(connection, 0.0, stop_after=_PER_WAKE)

    async def _read(self, connection: psycopg.AsyncConnection[Any], timeout: float,
                    stop_after: int) -> None:
        # Closed on the way out: the generator holds the connection's lock. Read whole:
        # it stops after a whole read from the socket, not within it.
        async with contextlib.aclosing(connection.notifies(
                timeout=timeout, stop_after=stop_after)) as notifies:
            async for notify in notifies:
                self.note(notify)
