"""The routing table: k-buckets by shared key prefix, replacement caches, flooding caps.

Every bucket holds at most ``k`` live contacts and ``k`` replacements, so the table is
bounded whatever the network sends. A new contact never pushes out a live one (old
contacts that keep answering are the most likely to stay up, and an attacker cannot
flush them); it waits in the replacement cache until an entry fails. Contacts from one
network are capped per bucket and per table, as hardened Kademlia implementations do, so
one network cannot fill the table with ids it generated; which network a contact is from
is what its connection shows, not what its record says (see :meth:`RoutingTable.place`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from p2phost_sdk import SignedPresence

from ._keys import DIALLED, KEY_BITS, bucket_index, networks, peer_key


@dataclass(eq=False)
class Entry:
    """One contact: its newest signed record, when it last answered, failures since.
    Compared by identity: a bucket finds and removes its own entry objects."""

    record: SignedPresence
    key: int
    #: The networks it counts against in the flooding caps (none: loopback).
    networks: tuple[str, ...]
    last_seen: float
    failures: int = 0
    #: False for a replacement whose record is kept unverified until it is promoted.
    verified: bool = True
    #: The remote address of the connection that placed it ("": placed by its record).
    seen_at: str = ""

    @property
    def peer_id(self) -> str:
        """The contact's peer id."""
        return self.record.peer_id


@dataclass
class Bucket:
    """Live entries (least recently seen first) and a replacement cache (newest last)."""

    entries: list[Entry] = field(default_factory=list)
    replacements: list[Entry] = field(default_factory=list)
    #: When a lookup last touched this bucket's range.
    refreshed: float = 0.0


@dataclass
class TableLimits:
    """The bounds of a routing table."""

    k: int = 20
    #: Most contacts from one address prefix in one bucket.
    prefix_per_bucket: int = 2
    #: Most contacts from one address prefix in the whole table.
    prefix_per_table: int = 10
    #: Failed requests in a row after which a contact is evicted.
    max_failures: int = 2


class RoutingTable:
    """The contacts of one node, by distance from its key."""

    def __init__(self, own_id: str, limits: TableLimits | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 check: Callable[[SignedPresence], SignedPresence | None] = lambda r: r,
                 source: Callable[[str], str] = lambda peer_id: "",
                 ) -> None:
        self.own_id = own_id
        #: Verifies a replacement's record when it is promoted (see :meth:`add`).
        self.check = check
        #: The remote address of the connection to a peer, "" when unknown (see :meth:`place`).
        self.source = source
        self.own_key = peer_key(own_id)
        self.limits = limits or TableLimits()
        self.clock = clock
        self.buckets = [Bucket() for _ in range(KEY_BITS + 1)]
        self._prefixes: Counter[str] = Counter()
        self._live: dict[str, Entry] = {}
        self._by_key: dict[int, Entry] = {}
        #: Contacts refused, by reason ("prefix cap", ...), and evicted.
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, peer_id: object) -> bool:
        return isinstance(peer_id, str) and self.get(peer_id) is not None

    def get(self, peer_id: str) -> Entry | None:
        """The live entry of ``peer_id``."""
        return self._live.get(peer_id)

    def wants(self, peer_id: str) -> bool:
        """Whether a record of ``peer_id`` would be a live entry (it is one, or its bucket
        has room): only then is it worth verifying now, see :meth:`add`."""
        if peer_id in self._live:
            return True
        bucket = self.buckets[bucket_index(self.own_key, peer_key(peer_id))]
        return len(bucket.entries) < self.limits.k

    def add(self, record: SignedPresence, *, alive: bool, verified: bool = True) -> bool:
        """Note ``record``; ``alive`` when its peer just answered or asked us something.
        True when it is (now) a live entry. An unverified record (``verified=False``,
        only when :meth:`wants` says no) can only wait as a replacement, and is verified
        with :attr:`check` if it is ever promoted: most never are."""
        if record.peer_id == self.own_id or record.goodbye:
            return False
        if not verified and self.wants(record.peer_id):
            return False
        key = peer_key(record.peer_id)
        bucket = self.buckets[bucket_index(self.own_key, key)]
        now = self.clock()
        live = self._live.get(record.peer_id)
        if live is not None:
            if record.sequence > live.record.sequence:
                self._replace(live, record, alive)
            if alive:
                live.last_seen, live.failures = now, 0
                if bucket.entries[-1] is not live:  # most recently seen last
                    bucket.entries.remove(live)
                    bucket.entries.append(live)
            return True
        seen_at, nets = self.place(record, alive)
        for entry in bucket.replacements:
            if entry.peer_id == record.peer_id:
                bucket.replacements.remove(entry)
                break
        if not self._prefix_room(bucket, nets):
            self.counters["prefix cap"] += 1
            return False
        entry = Entry(record, key, nets, now if alive else 0.0, verified=verified,
                      seen_at=seen_at)
        if len(bucket.entries) < self.limits.k and alive:
            bucket.entries.append(entry)
            self._live[entry.peer_id] = self._by_key[key] = entry
            self._prefixes.update(nets)
            return True
        # Full (or not proven alive): wait for a slot; the oldest replacement goes first.
        bucket.replacements.append(entry)
        if len(bucket.replacements) > self.limits.k:
            del bucket.replacements[0]
        return False

    def place(self, record: SignedPresence, alive: bool) -> tuple[str, tuple[str, ...]]:
        """Where a contact counts in the flooding caps: the remote address of its
        connection ("" when there is none to go by) and the networks it counts against.

        A record's addresses are the peer's own word, and the first one alone is no
        evidence: a thousand records from one network, each naming another network first
        (the real address second, which a dialler still reaches), took 128 places instead
        of 10. So a contact that just answered or asked over a connection (``alive``) is
        placed by where that connection comes from, which the peer cannot choose (it
        answered there). Without one (an Rpc that cannot tell, a connection already gone,
        a record not heard from its peer) it counts against every network among the
        addresses a node would dial, and is refused if any of them is full: whichever
        one is real is counted, so lying costs the liar room instead of winning it. (Its
        other addresses may use up room of networks it is not in, but only within the
        caps of the one it is in.) Loopback counts nowhere, as before."""
        seen_at = self.source(record.peer_id) if alive else ""
        if seen_at:
            return seen_at, networks([seen_at])
        return "", networks(record.addresses[:DIALLED])

    def _prefix_room(self, bucket: Bucket, nets: tuple[str, ...]) -> bool:
        limits, counts = self.limits, self._prefixes
        for net in nets:
            if counts[net] >= limits.prefix_per_table:
                return False
            same = sum(1 for e in bucket.entries if net in e.networks)
            if same >= limits.prefix_per_bucket:
                return False
        return True

    def _replace(self, entry: Entry, record: SignedPresence, alive: bool) -> None:
        # A contact that moved networks counts against its new ones. One placed by its
        # connection stays there until another connection shows where it is: a newer
        # record heard from a third peer is its own word (naming only loopback, it
        # would count nowhere, and give its network's room back to more of its ids).
        seen_at, nets = self.place(record, alive)
        entry.record = record
        if entry.seen_at and not seen_at:
            return
        self._uncount(entry.networks)
        entry.seen_at, entry.networks = seen_at, nets
        self._prefixes.update(entry.networks)

    def _uncount(self, nets: tuple[str, ...]) -> None:
        counts = self._prefixes
        for net in nets:
            counts[net] -= 1
            if counts[net] <= 0:  # the networks of contacts gone are not kept
                del counts[net]

    def failed(self, peer_id: str) -> bool:
        """A request to ``peer_id`` failed; True when that evicted it."""
        entry = self.get(peer_id)
        if entry is None:
            return False
        entry.failures += 1
        if entry.failures < self.limits.max_failures:
            return False
        self.remove(peer_id)
        return True

    def remove(self, peer_id: str) -> None:
        """Evict ``peer_id``; the newest replacement of its bucket takes its place."""
        bucket = self.buckets[bucket_index(self.own_key, peer_key(peer_id))]
        for entry in bucket.entries:
            if entry.peer_id == peer_id:
                bucket.entries.remove(entry)
                del self._live[peer_id], self._by_key[entry.key]
                self._uncount(entry.networks)
                self.counters["evicted"] += 1
                break
        while bucket.replacements and len(bucket.entries) < self.limits.k:
            spare = bucket.replacements.pop()
            if not spare.verified:
                checked = self.check(spare.record)
                if checked is None:
                    self.counters["replacement refused"] += 1
                    continue
                spare.record, spare.verified = checked, True
                if not spare.seen_at:  # placed by its record: by the one checked
                    spare.networks = networks(checked.addresses[:DIALLED])
            if self._prefix_room(bucket, spare.networks):
                bucket.entries.insert(0, spare)  # unproven: first in line to be checked
                self._live[spare.peer_id] = self._by_key[spare.key] = spare
                self._prefixes.update(spare.networks)

    def at(self, key: int) -> Entry | None:
        """The live entry whose key is ``key`` (the peer a peer lookup is for)."""
        return self._by_key.get(key)

    def closest(self, key: int, count: int | None = None,
                exclude: frozenset[str] = frozenset()) -> list[SignedPresence]:
        """The ``count`` (default k) live contacts closest to ``key``."""
        count = count or self.limits.k
        # Distances by C calls (xor, sort), not a Python key function per contact; a
        # distance xor the key is the contact's key again.
        by_key = self._by_key
        nearest = sorted(map(key.__xor__, by_key))[:count + len(exclude)]
        records = [by_key[d ^ key].record for d in nearest]
        if exclude:
            records = [r for r in records if r.peer_id not in exclude]
        return records[:count]

    def entries(self) -> list[Entry]:
        """Every live entry."""
        return list(self._live.values())

    def stale_buckets(self, older_than: float) -> list[int]:
        """Indexes of non-empty buckets no lookup touched for ``older_than`` seconds."""
        limit = self.clock() - older_than
        return [i for i, b in enumerate(self.buckets)
                if (b.entries or b.replacements) and b.refreshed < limit]

    def touched(self, key: int) -> None:
        """A lookup for ``key`` just ran: its bucket is fresh."""
        self.buckets[bucket_index(self.own_key, key)].refreshed = self.clock()

    def occupied_range(self) -> int:
        """One more than the deepest occupied bucket (buckets beyond hold nobody)."""
        deepest = max((i for i, b in enumerate(self.buckets) if b.entries), default=-1)
        return deepest + 1
