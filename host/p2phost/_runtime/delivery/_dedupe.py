"""The receiver's dedupe window: which messages, by (sender, message id), it is done with.

A message is *busy* from the moment it is taken until its outcome is committed (its
handler succeeded, it was put aside for a delayed retry, or dead-lettered), then *done*.
The receiver keeps the busy ones (with the copies that wait for them): a copy that
arrives while the first is busy is dropped (the first one's acknowledgement answers
both; a letter copy is acknowledged to its medium with it, not before). This window
keeps the done ones: a copy of a done message is acknowledged again and dropped (the
sender missed the first acknowledgement).

Done ids stay in memory for the most recent ones; for effectively-once topics they are
also written to the delivery database, in the transaction that commits the outcome,
and kept there for ``[delivery] dedupe-window`` seconds, across restarts.

A new message would cost a look-up in the database. But a sender numbers its messages
upwards from a random start each run (ids of idempotency keys aside: they are looked
up each time), so for each sender the receiver keeps a *gap*:
two stored ids with none committed between them (read once, with two indexed
queries); an id inside it is new without a look-up. Committing an id inside the gap
moves its lower end up to that id, so the gap stays true (the prune only deletes).
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict

from ._store import sql_id

Key = tuple[str, int]
#: Senders whose gap is kept at most.
_GAPS = 4096
_LOWEST, _HIGHEST = -(1 << 63) - 1, 1 << 63
#: Ids from here up are derived from idempotency keys (``send(..., key=)``).
_KEYED = 1 << 62
DONE = "done"


class Dedupe:
    """Done message ids of one node."""

    def __init__(self, db: sqlite3.Connection, *, window: float, memory: int = 100_000) -> None:
        self.db = db
        self.window = window
        self.memory = memory
        self._done: OrderedDict[Key, None] = OrderedDict()
        #: Done, with its mark in the inbox journal and not yet in the database (never
        #: forgotten before it is: :mod:`._injournal`).
        self.pinned: set[Key] = set()
        # Per sender: (low, high), stored ids with none committed strictly between.
        self._gaps: dict[str, tuple[int, int]] = {}

    def seen(self, key: Key, *, durable: bool) -> str | None:
        """DONE, or None for a message not done (``durable``: look in the database
        too)."""
        if key in self._done or key in self.pinned:
            return DONE
        if not durable:
            return None
        sender, stored = key[0], sql_id(key[1])
        gap = self._gaps.get(sender)
        if gap is not None and gap[0] < stored < gap[1]:
            return None  # no id there was ever committed: no look-up
        if self.db.execute("SELECT 1 FROM dedupe WHERE sender = ? AND id = ?",
                           (sender, stored)).fetchone():
            self.remember(key)
            return DONE
        if not 0 <= stored < _KEYED:
            return None  # an idempotency key's id: they do not count up
        # The ids of a sender's run count up: find the gap around this one once, and
        # its next messages fall into it.
        below = self.db.execute("SELECT MAX(id) FROM dedupe WHERE sender = ? AND id < ?",
                                (sender, stored)).fetchone()[0]
        above = self.db.execute("SELECT MIN(id) FROM dedupe WHERE sender = ? AND id > ?",
                                (sender, stored)).fetchone()[0]
        if len(self._gaps) >= _GAPS:
            self._gaps.clear()
        self._gaps[sender] = (_LOWEST if below is None else below,
                              _HIGHEST if above is None else above)
        return None

    def remember(self, key: Key) -> None:
        """``key``'s outcome is committed: it is done."""
        gap = self._gaps.get(key[0])
        if gap is not None:
            stored = sql_id(key[1])
            if gap[0] < stored < gap[1]:  # now committed: the gap is what lies above it
                self._gaps[key[0]] = (stored, gap[1])
        self._done[key] = None
        if len(self._done) > self.memory:
            self._done.popitem(last=False)

    @staticmethod
    def mark(db: sqlite3.Connection, key: Key) -> None:
        """Write ``key`` to the durable window (inside the caller's transaction)."""
        db.execute("INSERT OR IGNORE INTO dedupe (sender, id, at) VALUES (?, ?, ?)",
                   (key[0], sql_id(key[1]), time.time()))

    def prune(self, db: sqlite3.Connection) -> int:
        """Forget durable ids older than the window (a write: the committer runs it);
        how many were forgotten."""
        cursor = db.execute("DELETE FROM dedupe WHERE at < ?", (time.time() - self.window,))
        return cursor.rowcount
