"""The outbox's messages that live in the journal, not yet in the database.

A message put in the outbox is appended to the journal (:mod:`._journal`) and kept here
in memory, *pending*. Each transaction of the :class:`~._committer.Committer` starts by
*folding* every pending message into the outbox table (they are *folding* until it
commits), and records the highest sequence number folded in ``journal_mark``. A
message acknowledged while still pending never reaches the database: an ACK record in
the journal says so, in case of a replay.

Replay (on start, before anything is sent): every PUT record above the mark that no
later ACK record cancels is inserted into the outbox table, in one transaction; then
the journal starts afresh. So after a kill at any instant the outbox holds exactly the
messages whose ``send()`` returned (or was about to) and that were not acknowledged.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import struct
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._committer import Committer, Gathered
from ._journal import Journal
from ._store import sql_id, transaction, wire_id

log = logging.getLogger("p2phost.delivery")
_PUT = struct.Struct("<cqqd")  # b"P", seq, id, created; then the lengths of dest, topic,
#                                 content type (H each); those strings; the body
_NAMES = struct.Struct("<HHH")
_ACK = struct.Struct("<cH")  # b"A", length of dest; dest; ids (q each)
_ID = struct.Struct("<q")
#: Seconds pending messages wait to be folded at most (most are acknowledged sooner,
#: and never need folding), unless the journal is crowded.
FOLD_WAIT = 10.0
#: A message larger than this share of a segment goes straight to the database.
_LARGE = 8

Key = tuple[str, int]


class Held(NamedTuple):
    """A message in the journal: its outbox row, and the segment holding its record."""

    seq: int
    dest: str
    id: int
    topic: str
    content_type: str
    body: bytes
    created: float
    segment: int


_INSERT = ("INSERT OR IGNORE INTO outbox (seq, dest, id, topic, content_type, body, created) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_AFTER = ("INSERT INTO outbox (dest, id, topic, content_type, body, created) "
                 "VALUES (?, ?, ?, ?, ?, ?)")
_MARK = ("INSERT INTO journal_mark (id, folded) VALUES (0, ?) "
         "ON CONFLICT (id) DO UPDATE SET folded = max(folded, excluded.folded)")


def _row(held: Held) -> tuple[Any, ...]:
    return (held.seq, held.dest, sql_id(held.id), held.topic, held.content_type, held.body,
            held.created)


def unfolded(payloads: Iterable[bytes], folded: int
             ) -> tuple[dict[Key, tuple[Any, ...]], int]:
    """The outbox rows an outbox journal's records (``payloads``) hold above sequence
    number ``folded`` that no later ACK record cancels; and the highest number seen."""
    puts: dict[Key, tuple[Any, ...]] = {}
    top = folded
    for payload in payloads:
        if payload[:1] == b"P":
            _, seq, stored, created = _PUT.unpack_from(payload)
            a, b, c = _NAMES.unpack_from(payload, _PUT.size)
            at = _PUT.size + _NAMES.size
            dest = payload[at:at + a].decode()
            topic = payload[at + a:at + a + b].decode()
            content_type = payload[at + a + b:at + a + b + c].decode()
            top = max(top, seq)
            if seq > folded:
                puts[(dest, wire_id(stored))] = (seq, dest, stored, topic, content_type,
                                                 payload[at + a + b + c:], created)
        elif payload[:1] == b"A":
            _, a = _ACK.unpack_from(payload)
            dest = payload[_ACK.size:_ACK.size + a].decode()
            for (stored,) in _ID.iter_unpack(payload[_ACK.size + a:]):
                puts.pop((dest, wire_id(stored)), None)
    return puts, top


class JournalRows:
    """Pending and folding messages of one outbox, and its journal."""

    def __init__(self, journal: Journal, committer: Committer) -> None:
        self.journal = journal
        self.committer = committer
        self.pending: dict[Key, Held] = {}
        self.folding: dict[Key, Held] = {}
        self._asked = False
        self._urgent = False
        # (dest, topic, content type) -> their lengths and bytes, as records hold them.
        self._names: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
        db = committer.db
        top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        mark = db.execute("SELECT folded FROM journal_mark WHERE id = 0").fetchone()
        #: Outbox sequence numbers: every insert into the outbox takes one.
        self.seqs = itertools.count(max(top, seq[0] if seq else 0,
                                        mark[0] if mark else 0) + 1)
        committer.gathers.append(self._gather)

    # -- start -----------------------------------------------------------------------

    @staticmethod
    def replay(journal: Journal, db: sqlite3.Connection) -> int:
        """Insert what the journal holds and the outbox does not into ``db`` (before the
        node sends anything), then empty the journal; how many messages."""
        mark = db.execute("SELECT folded FROM journal_mark WHERE id = 0").fetchone()
        folded = mark[0] if mark else 0
        puts, top = unfolded(journal.replay(), folded)
        if top > folded or puts:
            with transaction(db):
                for row in puts.values():
                    if db.execute(_INSERT, row).rowcount == 0 and db.execute(
                            "SELECT 1 FROM outbox WHERE dest = ? AND id = ?",
                            (row[1], row[2])).fetchone() is None:
                        # Its number was taken by a dead letter requeued while the node
                        # was down (`p2phost dead retry`): it goes after that one.
                        db.execute(_INSERT_AFTER, row[1:])
                db.execute(_MARK, (top,))
        journal.restart()
        return len(puts)

    # -- the loop's side -------------------------------------------------------------

    def append(self, dest: str, topic: str, data: bytes, content_type: str,
               message_id: int) -> Held | None:
        """Journal a message (durable when this returns); None when it is too large for
        the journal or the journal is full (then the caller inserts it itself)."""
        journal = self.journal
        if len(data) > journal.segment // _LARGE:
            return None
        seq, created = next(self.seqs), time.time()
        names = self._names.get((dest, topic, content_type))
        if names is None:
            if len(self._names) > 1024:
                self._names.clear()
            parts = (dest.encode(), topic.encode(), content_type.encode())
            names = self._names[(dest, topic, content_type)] = (
                _NAMES.pack(*map(len, parts)), b"".join(parts))
        segment = journal.append(b"".join((_PUT.pack(b"P", seq, sql_id(message_id), created),
                                           names[0], names[1], data)))
        if segment is None:
            self.fold(urgent=True)
            return None
        held = self.pending[(dest, message_id)] = Held(seq, dest, message_id, topic,
                                                       content_type, data, created, segment)
        if journal.crowded() and not self.folding:
            # Filling, and the other segment still holds unsettled records: fold them
            # all now, so it can be reset (unless a fold is under way already).
            self.fold(urgent=True)
        elif not self._asked:
            self.fold()
        return held

    def acked(self, dest: str, ids: list[int]) -> tuple[list[Held], list[int]]:
        """``dest`` acknowledged ``ids``: the pending ones are settled here (an ACK record
        in the journal); the others (folded, or being folded) are left to the caller to
        delete from the database."""
        settled: list[int] = []
        rest: list[int] = []
        for message_id in ids:
            held = self.pending.get((dest, message_id))
            (rest if held is None else settled).append(message_id)
        if settled:
            encoded = dest.encode()
            record = b"".join((_ACK.pack(b"A", len(encoded)), encoded,
                               *(_ID.pack(sql_id(i)) for i in settled)))
            if self.journal.append(record, counted=False) is None:
                return [], ids  # no room: fold them and delete them in the database
            found = [self.pending.pop((dest, i)) for i in settled]
            for segment in (0, 1):
                count = sum(1 for held in found if held.segment == segment)
                if count:
                    self.journal.settled(segment, count)
            return found, rest
        return [], rest

    def held(self, dest: str | None = None) -> list[Held]:
        """Messages (for ``dest``) in the journal whose rows the loop may not see yet."""
        both = [*self.folding.values(), *self.pending.values()]
        return both if dest is None else [h for h in both if h.dest == dest]

    def fold(self, *, urgent: bool = False) -> None:
        """Ask for a transaction to fold the pending messages: within :data:`FOLD_WAIT`,
        or at once."""
        if urgent:
            if not self._urgent:
                self._urgent = self._asked = True
                self.committer.want()
        elif not self._asked:
            self._asked = True
            self.committer.want(FOLD_WAIT)

    def _gather(self) -> Gathered | None:
        self._asked = self._urgent = False
        if not self.pending:
            return None
        batch, self.pending = self.pending, {}
        self.folding.update(batch)
        self.journal.seal()
        rows = [_row(held) for held in batch.values()]
        top = max(held.seq for held in batch.values())

        def op(db: sqlite3.Connection) -> None:
            db.executemany(_INSERT, rows)
            db.execute(_MARK, (top,))

        def then() -> None:
            counts = [0, 0]
            for key, held in batch.items():
                del self.folding[key]
                counts[held.segment] += 1
            for segment, count in enumerate(counts):
                if count:
                    self.journal.settled(segment, count)

        def failed() -> None:
            for key in batch:
                del self.folding[key]
            self.pending = {**batch, **self.pending}
            if self.pending:
                self.fold()

        return op, then, failed, len(rows)

    def close(self) -> None:
        """Unmap the journal (what it holds is replayed by the next start)."""
        self.journal.close()


class Waiting:
    """What waits in an outbox: rows of the table, and messages the journal holds."""

    def __init__(self, db: sqlite3.Connection, journal: JournalRows | None) -> None:
        self.db = db
        self.journal = journal

    def held(self, dest: str | None = None) -> list[Held]:
        """Messages (for ``dest``) the journal holds, perhaps not in the table yet."""
        return [] if self.journal is None else self.journal.held(dest)

    def destinations(self) -> list[str]:
        """Every destination that has messages waiting."""
        found = {d for (d,) in self.db.execute("SELECT DISTINCT dest FROM outbox")}
        return sorted(found.union(h.dest for h in self.held()))

    def count(self) -> int:
        """How many messages wait (at the end of a fold, those it folded may be counted
        twice for a moment)."""
        journal = self.journal
        held = 0 if journal is None else len(journal.pending) + len(journal.folding)
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]) + held

    def by_topic(self) -> dict[str, tuple[int, float]]:
        """Per topic: messages waiting, and when the oldest was sent (epoch seconds)."""
        found = {topic: (count, oldest) for topic, count, oldest in self.db.execute(
            "SELECT topic, COUNT(*), MIN(created) FROM outbox GROUP BY topic")}
        for held in self.held():
            count, oldest = found.get(held.topic, (0, held.created))
            found[held.topic] = (count + 1, min(oldest, held.created))
        return found

    def has_rows(self, dest: str) -> bool:
        """Whether anything waits for ``dest``."""
        journal = self.journal
        if journal is not None and any(held.dest == dest for held in itertools.chain(
                journal.folding.values(), journal.pending.values())):
            return True
        return self.db.execute("SELECT 1 FROM outbox WHERE dest = ? LIMIT 1",
                               (dest,)).fetchone() is not None

    def kept(self, dest: str, message_id: int) -> bool:
        """Whether message ``message_id`` for ``dest`` waits already (a key sent again)."""
        journal = self.journal
        key = (dest, message_id)
        return (journal is not None and (key in journal.pending or key in journal.folding)) \
            or self.db.execute("SELECT 1 FROM outbox WHERE dest = ? AND id = ?",
                               (dest, sql_id(message_id))).fetchone() is not None
