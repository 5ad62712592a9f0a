"""The receiver's outcomes in a journal: what a handler's success commits, durable
before the message is acknowledged, without a transaction of its own.

A handler that succeeded on an acknowledged topic has an outcome to commit: its
writes to ``message.store`` and, on an effectively-once topic, the message's mark in
the dedupe window. With a state directory the outcome is appended to
``.p2phost/inbox.journal`` (a :class:`~._journal.Journal`: a copy into a mapping,
durable against a kill the moment it is made) and the message is acknowledged at
once; each transaction of the :class:`~._committer.Committer` starts by *folding* the
outcomes appended since into the database (``app_state``, ``dedupe``), recording the
last one folded in ``journal_mark``. Until then the store writes stay visible to
later handlers (:class:`~._appstate.AppState`), and the dedupe window answers "done"
for the message (:attr:`~._dedupe.Dedupe.pinned`).

Replay (on start, before any message is taken): every outcome above the mark is
applied in order, in one transaction. Other outcomes (a delayed retry's, parked,
dead-lettered) take the database path as before, and since every transaction folds
first, they are committed after the outcomes appended before them.
"""

from __future__ import annotations

import itertools
import sqlite3
import struct
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ._committer import Committer, Gathered
from ._dedupe import Dedupe, Key
from ._journal import Journal
from ._store import sql_id, transaction, wire_id

INBOX_JOURNAL = "inbox.journal"
#: Its segments' size: outcome records are small (about 100 bytes and the store writes).
INBOX_SEGMENT = 1024 * 1024
# b"O", seq, message id, when, effectively-once, lengths of sender and app; those;
# then each write: key length, value length (_DELETED: a deletion), key, value.
_OUTCOME = struct.Struct("<cqqdBHH")
_WRITE = struct.Struct("<HI")
_DELETED = 0xFFFFFFFF
_MARK_ID = 1
_MARK = ("INSERT INTO journal_mark (id, folded) VALUES (?, ?) "
         "ON CONFLICT (id) DO UPDATE SET folded = max(folded, excluded.folded)")
#: An outcome larger than this share of a segment goes straight to the database.
_LARGE = 8
#: Seconds outcomes wait to be folded at most (with no other write to ride with).
_FOLD_WAIT = 1.0


class _Outcome(NamedTuple):
    seq: int
    key: Key
    durable: bool
    app: str
    writes: Mapping[str, str | None]
    settle: Callable[[], None]
    segment: int


_HEAD = struct.Struct("<cqqdB")  # _OUTCOME up to the lengths (which _names caches)


def _encode(seq: int, key: Key, durable: bool, names: bytes,
            writes: Mapping[str, str | None]) -> bytes:
    parts = [_HEAD.pack(b"O", seq, sql_id(key[1]), time.time(), durable), names]
    for k, value in writes.items():
        encoded_key = k.encode()
        encoded = b"" if value is None else value.encode()
        parts += [_WRITE.pack(len(encoded_key), _DELETED if value is None else len(encoded)),
                  encoded_key, encoded]
    return b"".join(parts)


def _apply(db: sqlite3.Connection, payload: bytes) -> tuple[int, Key]:
    """Apply one outcome record to ``db``; its seq and message."""
    _, seq, stored, at, durable, a, b = _OUTCOME.unpack_from(payload)
    pos = _OUTCOME.size
    sender, app = payload[pos:pos + a].decode(), payload[pos + a:pos + a + b].decode()
    pos += a + b
    while pos < len(payload):
        k, v = _WRITE.unpack_from(payload, pos)
        pos += _WRITE.size
        key = payload[pos:pos + k].decode()
        pos += k
        if v == _DELETED:
            db.execute("DELETE FROM app_state WHERE app = ? AND key = ?", (app, key))
        else:
            db.execute("INSERT OR REPLACE INTO app_state (app, key, value) VALUES (?, ?, ?)",
                       (app, key, payload[pos:pos + v].decode()))
            pos += v
    if durable:
        db.execute("INSERT OR IGNORE INTO dedupe (sender, id, at) VALUES (?, ?, ?)",
                   (sender, stored, at))
    return seq, (sender, wire_id(stored))


class OutcomeJournal:
    """Outcomes appended and not yet folded (see the module's docstring)."""

    def __init__(self, journal: Journal, committer: Committer, dedupe: Dedupe) -> None:
        self.journal = journal
        self.dedupe = dedupe
        self.committer = committer
        self._pending: list[_Outcome] = []
        self._folding = False
        self._asked = False
        # (sender, app) -> their lengths and bytes, as records hold them.
        self._names: dict[tuple[str, str], bytes] = {}
        mark = committer.db.execute("SELECT folded FROM journal_mark WHERE id = ?",
                                    (_MARK_ID,)).fetchone()
        self._seqs = itertools.count((mark[0] if mark else 0) + 1)
        committer.gathers.append(self._gather)

    @staticmethod
    def replay(journal: Journal, db: sqlite3.Connection) -> int:
        """Apply the outcomes the database lacks (before any message is taken), then
        empty the journal; how many."""
        mark = db.execute("SELECT folded FROM journal_mark WHERE id = ?",
                          (_MARK_ID,)).fetchone()
        folded = top = mark[0] if mark else 0
        applied = 0
        records = [p for p in journal.replay() if p[:1] == b"O"]
        if records:
            with transaction(db):
                for payload in records:
                    (seq,) = struct.unpack_from("<q", payload, 1)
                    if seq > folded:
                        _apply(db, payload)
                        applied += 1
                        top = max(top, seq)
                db.execute(_MARK, (_MARK_ID, top))
        journal.restart()
        return applied

    def append(self, key: Key, durable: bool, app: str, writes: Mapping[str, str | None],
               settle: Callable[[], None]) -> bool:
        """Journal a handler's outcome (durable when this returns True); False when it
        does not fit (the caller commits it in the database)."""
        seq = next(self._seqs)
        names = self._names.get((key[0], app))
        if names is None:
            if len(self._names) > 1024:
                self._names.clear()
            sender, name = key[0].encode(), app.encode()
            names = self._names[(key[0], app)] = b"".join(
                (struct.pack("<HH", len(sender), len(name)), sender, name))
        record = _encode(seq, key, durable, names, writes)
        journal = self.journal
        segment = None if len(record) > journal.segment // _LARGE else journal.append(record)
        if segment is None:
            self.committer.want()  # fold, to make room
            return False
        self._pending.append(_Outcome(seq, key, durable, app, dict(writes), settle, segment))
        if durable:
            self.dedupe.pinned.add(key)
        if journal.crowded() and not self._folding:
            self.committer.want()
        elif not self._asked:
            self._asked = True
            self.committer.want(_FOLD_WAIT)
        return True

    def _gather(self) -> Gathered | None:
        self._asked = False
        if not self._pending or self._folding:
            return None
        batch, self._pending = self._pending, []
        self._folding = True
        self.journal.seal()
        top = batch[-1].seq

        def op(db: sqlite3.Connection) -> None:
            # One transaction: only each key's last value is ever seen, so only it is
            # written (a counter a handler updates per message is one row per fold).
            final = {(o.app, k): v for o in batch for k, v in o.writes.items()}
            db.executemany("INSERT OR REPLACE INTO app_state (app, key, value) VALUES "
                           "(?, ?, ?)", ((a, k, v) for (a, k), v in final.items()
                                         if v is not None))
            db.executemany("DELETE FROM app_state WHERE app = ? AND key = ?",
                           (key for key, v in final.items() if v is None))
            now = time.time()
            db.executemany("INSERT OR IGNORE INTO dedupe (sender, id, at) VALUES (?, ?, ?)",
                           ((o.key[0], sql_id(o.key[1]), now) for o in batch if o.durable))
            db.execute(_MARK, (_MARK_ID, top))

        def then() -> None:
            self._folding = False
            counts = [0, 0]
            for outcome in batch:
                outcome.settle()
                self.dedupe.pinned.discard(outcome.key)
                counts[outcome.segment] += 1
            for segment, count in enumerate(counts):
                if count:
                    self.journal.settled(segment, count)

        def failed() -> None:
            self._folding = False
            self._pending[:0] = batch
            self.committer.want(_FOLD_WAIT)

        return op, then, failed, len(batch)

    def close(self) -> None:
        """Unmap the journal (what it holds is replayed by the next start)."""
        self.journal.close()
