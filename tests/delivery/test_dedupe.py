"""The dedupe window's gaps: an id between two committed ones is new without a look-up,
and no gap ever hides an id that was committed."""

from __future__ import annotations

from pathlib import Path

from p2phost._runtime.delivery._dedupe import DONE, Dedupe
from p2phost._runtime.delivery._store import open_database


def test_gaps_never_hide_a_committed_id(tmp_path: Path) -> None:
    db = open_database(tmp_path / "delivery.db")
    for committed in (10, 20, 30):
        Dedupe.mark(db, ("alice", committed))
    looked: list[str] = []
    db.set_trace_callback(looked.append)
    dedupe = Dedupe(db, window=3600, memory=0)  # memory 0: only the database remembers
    assert dedupe.seen(("alice", 11), durable=True) is None  # finds the gap (10, 20)
    before = len(looked)
    assert dedupe.seen(("alice", 12), durable=True) is None
    assert len(looked) == before, "an id inside the gap needed no look-up"
    # 15 is committed now (mark in the outcome's transaction, then released as done).
    Dedupe.mark(db, ("alice", 15))
    dedupe.remember(("alice", 15))
    assert dedupe.seen(("alice", 15), durable=True) == DONE
    assert dedupe.seen(("alice", 14), durable=True) is None  # below the gap: looked up
    assert dedupe.seen(("alice", 16), durable=True) is None
    for old in (10, 20, 30):
        assert dedupe.seen(("alice", old), durable=True) == DONE
    assert dedupe.seen(("bob", 15), durable=True) is None  # gaps are per sender
    # A restart (a fresh window over the same database) knows them all again.
    again = Dedupe(db, window=3600, memory=0)
    for old in (10, 15, 20, 30):
        assert again.seen(("alice", old), durable=True) == DONE
    keyed = (1 << 62) | 5
    Dedupe.mark(db, ("alice", keyed))
    assert again.seen(("alice", keyed), durable=True) == DONE
    db.close()
