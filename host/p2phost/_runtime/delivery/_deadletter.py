"""The dead-letter store: messages that could not be handled or sent, kept for an operator.

A message lands here when its handler failed every attempt of its topic's retry
policy, when its body cannot be decoded (a poison message: no retries), or, on the
sending side, when the peer does not handle its topic. ``p2phost dead`` lists, shows,
retries and purges them; a retry puts the message back where it failed (the handler's
delayed-retry queue, or the outbox) with a fresh retry policy.

The store is bounded (``[delivery] dead-letter-limit``). When it is full it drops the
oldest dead letter or the new one (``dead-letter-keep``), and says so at ERROR level.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .._limited import LimitedLogs
from ._store import sql_id, wire_id

if TYPE_CHECKING:
    from ..messaging._stats import DeliveryStats

_COLUMNS = ("id, direction, peer, message_id, topic, content_type, body, attempts, reason, "
            "error, traceback, first_at, dead_at")


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter."""

    id: int
    #: "in": received here and not handled; "out": this node could not send it.
    direction: str
    #: The sender ("in") or the destination ("out").
    peer: str
    message_id: int
    topic: str
    content_type: str
    body: bytes
    #: How many times the handler ran (0: never, e.g. a body that cannot be decoded).
    attempts: int
    #: Why it is here, in one line.
    reason: str
    #: The last exception, ``Type: message`` ("" when none).
    error: str
    traceback: str
    first_at: float
    dead_at: float

    @classmethod
    def from_row(cls, row: tuple[object, ...]) -> DeadLetter:
        """A row of the ``dead`` table (columns in :data:`_COLUMNS` order)."""
        letter = cls(*row)  # type: ignore[arg-type]
        return replace(letter, message_id=wire_id(letter.message_id))

    def body_text(self, limit: int = 0) -> str:
        """The body for people: its text when it is UTF-8, else its bytes in hex."""
        try:
            text = self.body.decode()
        except UnicodeDecodeError:
            text = "0x" + self.body.hex()
        return text if not limit or len(text) <= limit else text[:limit - 1] + "…"


class DeadLetters:
    """The dead letters of one delivery database (synchronous: quick local queries)."""

    def __init__(self, db: sqlite3.Connection, *, limit: int = 10_000,
                 keep: str = "newest") -> None:
        self.db = db
        self.limit = limit
        self.keep = keep

    def add(self, db: sqlite3.Connection, letter: DeadLetter) -> tuple[int, list[DeadLetter]]:
        """Store ``letter`` (inside the caller's transaction); returns its id (0 when the
        full store dropped it) and the dead letters the full store dropped for it."""
        count = db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]
        dropped: list[DeadLetter] = []
        if count >= self.limit:
            if self.keep == "oldest":
                return 0, [letter]
            rows = db.execute(f"SELECT {_COLUMNS} FROM dead ORDER BY id LIMIT ?",
                              (count - self.limit + 1,)).fetchall()
            dropped = [DeadLetter.from_row(r) for r in rows]
            db.executemany("DELETE FROM dead WHERE id = ?", [(d.id,) for d in dropped])
        cursor = db.execute(
            "INSERT INTO dead (direction, peer, message_id, topic, content_type, body, "
            "attempts, reason, error, traceback, first_at, dead_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (letter.direction, letter.peer, sql_id(letter.message_id), letter.topic,
             letter.content_type, letter.body, letter.attempts, letter.reason, letter.error,
             letter.traceback, letter.first_at, letter.dead_at))
        return int(cursor.lastrowid or 0), dropped

    def full_message(self, dropped: DeadLetter) -> str:
        """What to log when the full store dropped ``dropped``."""
        which = "the new dead letter" if self.keep == "oldest" else \
            f"the oldest dead letter #{dropped.id}"
        return (f"the dead-letter store is full (dead-letter-limit = {self.limit}): dropped "
                f"{which} (topic {dropped.topic!r}, message {dropped.message_id:016x}, "
                f"{'from' if dropped.direction == 'in' else 'to'} {dropped.peer}: "
                f"{dropped.reason}) to keep the {self.keep}; purge it with `p2phost dead "
                "purge`, or raise [delivery] dead-letter-limit in p2phost.toml")

    def count(self) -> int:
        """How many dead letters there are."""
        return int(self.db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def entries(self, topic: str | None = None) -> list[DeadLetter]:
        """Every dead letter (of ``topic``), oldest first."""
        where, args = ("WHERE topic = ?", (topic,)) if topic is not None else ("", ())
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM dead {where} ORDER BY id",
                               args).fetchall()
        return [DeadLetter.from_row(r) for r in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        """The dead letter ``letter_id``, if there is one."""
        row = self.db.execute(f"SELECT {_COLUMNS} FROM dead WHERE id = ?",
                              (letter_id,)).fetchone()
        return None if row is None else DeadLetter.from_row(row)

    def select(self, ids: Iterable[int] = (), topic: str | None = None) -> list[DeadLetter]:
        """The dead letters with ``ids``; with no ids, all of them (of ``topic``)."""
        wanted = list(ids)
        if not wanted:
            return self.entries(topic)
        found = [letter for i in wanted if (letter := self.get(i)) is not None]
        return [d for d in found if topic is None or d.topic == topic]

    @staticmethod
    def remove(db: sqlite3.Connection, letters: Iterable[DeadLetter]) -> None:
        """Delete ``letters`` (inside the caller's transaction)."""
        db.executemany("DELETE FROM dead WHERE id = ?", [(d.id,) for d in letters])

    @staticmethod
    def requeue(db: sqlite3.Connection, letters: Iterable[DeadLetter],
                seqs: Iterator[int] | None = None) -> None:
        """Put ``letters`` back where they failed, with a fresh retry policy (inside the
        caller's transaction): received ones to the delayed-retry queue, due now; unsent
        ones to the outbox of their peer (numbered from ``seqs``, the running node's
        outbox numbers, if given)."""
        now = time.time()
        for d in letters:
            if d.direction == "in":
                db.execute("INSERT INTO delayed (sender, id, topic, content_type, body, "
                           "attempts, rounds, due, first_at) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?)",
                           (d.peer, sql_id(d.message_id), d.topic, d.content_type, d.body,
                            now, now))
            else:
                db.execute("INSERT OR IGNORE INTO outbox (seq, dest, id, topic, content_type, "
                           "body, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (None if seqs is None else next(seqs), d.peer, sql_id(d.message_id),
                            d.topic, d.content_type, d.body, now))
            db.execute("DELETE FROM dead WHERE id = ?", (d.id,))


class DeadLines(LimitedLogs):
    """The lines of one part of the node (the receiver, the outbox, bridges' payloads)
    about its dead letters: a peer can cause one per message (its codec, its frame limit,
    a handler that always fails), so rate-limited per peer and topic, at ERROR level."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, "dead letters", level=logging.ERROR)

    def dropped(self, dead: DeadLetters, letters: Iterable[DeadLetter],
                stats: DeliveryStats) -> None:
        """Say and count each dead letter the full store ``dead`` dropped."""
        for lost in letters:
            self.log((lost.peer, lost.topic, "store full"), "%s", dead.full_message(lost))
            stats.drop(lost.topic, "dead-letter store full")
