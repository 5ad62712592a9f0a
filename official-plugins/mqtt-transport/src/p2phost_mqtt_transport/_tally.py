"""The letters one retained count says were stored (by a sender) or taken (by the node),
and what waits and what expired, worked out from them.

Under ``max-age`` each letter is published with MQTT 5's Message Expiry Interval, and
the broker drops it unread once that passes, telling nobody. So both sides count letters
per *expiry bucket*: a letter stored at time t belongs to the bucket
``ceil((t + max-age) / width) * width`` (``width`` = max-age / 32, at least 1 s), carried
in its topic (``p2phost/inbox/NAME/x/BUCKET``) so that the node knows it too. The broker
drops the letter by ``BUCKET + 1`` at the latest; a bucket whose end passed is *due*:

- expired unread = stored in due buckets - taken from due buckets (a letter taken was
  taken before it expired; one delivered to a node killed before acknowledging it is not
  taken, and the broker does not deliver it again once expired);
- a place in the broker's queue is freed by an expired letter only once the broker has
  dropped it, which it does when the session reads past it: the node marks how far it
  has read (``passed``: every bucket below it was stored before something the node has
  since received). What waits = stored - taken - (expired in buckets below ``passed``).

Due buckets below ``passed`` are folded into one sum (``g``), by each writer on its own:
both sides fold the same letters (a due bucket stays due, ``passed`` only grows), so the
record stays small.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

#: Buckets per max-age: a letter is counted as expired at most max-age / 32 (and 1 s)
#: after the broker dropped it.
BUCKETS = 32


def bucket_width(max_age: float) -> int:
    """Seconds per expiry bucket for ``max_age``."""
    return max(1, math.ceil(max_age / BUCKETS))


def bucket_of(now: float, max_age: float) -> int:
    """The bucket of a letter stored at ``now`` (Unix seconds) under ``max_age``."""
    width = bucket_width(max_age)
    return math.ceil((now + max_age) / width) * width


def _due(bucket: int, now: float) -> bool:
    # The broker's expiry is publish time + ceil(max-age) < bucket + 1.
    return bucket + 1 <= now


@dataclass(frozen=True)
class Count:
    """Letters and the bytes of their records."""

    n: int = 0
    b: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(self.n + other.n, self.b + other.b)

    def __sub__(self, other: Count) -> Count:
        return Count(self.n - other.n, self.b - other.b)

    def floor(self) -> Count:
        """Never below zero (counts written at different moments may disagree)."""
        return Count(max(0, self.n), max(0, self.b))


@dataclass
class Tally:
    """What one retained count says: letters ever counted, those with an expiry by
    bucket, the due ones below ``passed`` folded, and (the node's) ``passed``."""

    total: Count = Count()
    buckets: dict[int, Count] = field(default_factory=dict)
    folded: Count = Count()
    passed: int = 0
    #: Of ``total``'s letters, the places a sender claimed and has not used yet (it
    #: stores into them without writing its count: ``_stores``).
    unused: int = 0

    def add(self, count: Count, bucket: int | None) -> None:
        """Count ``count`` letters more (of expiry ``bucket``; None: they never expire)."""
        self.total += count
        if bucket is not None:
            self.buckets[bucket] = self.buckets.get(bucket, Count()) + count

    def fold(self, now: float, passed: int) -> None:
        """Fold the due buckets below ``passed`` into one sum."""
        for bucket in [b for b in self.buckets if b < passed and _due(b, now)]:
            self.folded += self.buckets.pop(bucket)

    def due(self, now: float, below: int | None = None) -> Count:
        """Letters in due buckets (below ``below`` only, if given; folded ones are)."""
        return sum((c for b, c in self.buckets.items()
                    if _due(b, now) and (below is None or b < below)), self.folded)

    def copy(self) -> Tally:
        """A copy (buckets not shared)."""
        return Tally(self.total, dict(self.buckets), self.folded, self.passed, self.unused)

    def merge(self, other: Tally) -> None:
        """Add ``other``'s letters to these."""
        self.total += other.total
        self.folded += other.folded
        for bucket, count in other.buckets.items():
            self.buckets[bucket] = self.buckets.get(bucket, Count()) + count

    def payload(self) -> bytes:
        """The retained message's payload."""
        value: dict[str, object] = {"n": self.total.n, "b": self.total.b}
        if self.buckets or self.folded.n:
            value["x"] = {str(b): [c.n, c.b] for b, c in sorted(self.buckets.items())}
            value["g"] = [self.folded.n, self.folded.b]
        if self.passed:
            value["p"] = self.passed
        if self.unused:
            value["s"] = self.total.n - self.unused  # the letters really stored
        return json.dumps(value, separators=(",", ":")).encode()


def parse(payload: bytes) -> Tally:
    """A retained count (JSON, or an older bare number of letters); nothing: zero."""
    try:
        value = json.loads(payload or b"0")
        if isinstance(value, int):
            return Tally(Count(max(0, value)))
        n = int(value.get("n", 0))
        return Tally(Count(n, int(value.get("b", 0))),
                     {int(b): Count(int(c[0]), int(c[1]))
                      for b, c in dict(value.get("x", {})).items()},
                     Count(*(int(x) for x in value.get("g", [0, 0]))),
                     int(value.get("p", 0)), max(0, n - int(value.get("s", n))))
    except (ValueError, TypeError, AttributeError, IndexError):
        return Tally()


@dataclass(frozen=True)
class Inbox:
    """An inbox's limits (from its marker, 0: none) and its counts, as last seen."""

    max_messages: int = 0
    max_bytes: int = 0
    max_age: float = 0.0
    stored: tuple[Tally, ...] = ()
    taken: Tally = field(default_factory=Tally)

    def expired(self, now: float) -> Count:
        """Letters whose expiry passed and that the node never took."""
        stored = sum((t.due(now) for t in self.stored), Count())
        return (stored - self.taken.due(now)).floor()

    def waiting(self, now: float) -> Count:
        """Letters in the broker's queue for the node (expired ones the broker has not
        dropped yet included): stored - taken - expired below ``passed``."""
        passed = self.taken.passed
        stored = sum((t.total - t.due(now, passed) for t in self.stored), Count())
        return (stored - (self.taken.total - self.taken.due(now, passed))).floor()
