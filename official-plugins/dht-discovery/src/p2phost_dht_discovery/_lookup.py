"""The iterative lookup: ask the alpha closest unasked contacts, learn closer ones, repeat.

Nothing a peer answers is trusted beyond its signatures: an answer names contacts as
:class:`Offer` (a peer id and that peer's signed record, not yet verified), and a record
is verified only when the lookup uses it: to ask that peer (its addresses are dialled),
or because it is the target's. The other offers only order the candidates, and cost
nothing. Answers are only ever *candidates* (never "the closest" until asked themselves),
and the lookup ends when the k closest candidates have all been asked, or failed, or its
deadline passed. A peer that answers every lookup with itself therefore only spends one
of the alpha slots once per lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from p2phost_sdk import SignedPresence

from ._keys import peer_key

#: Copies of one peer's record a lookup keeps and tries: each answer adds at most one, so
#: a forged copy cannot hide the genuine one another peer offers, and copies cannot cost
#: more than this many verifications.
MAX_COPIES = 20


@dataclass(slots=True)
class Offer:
    """A contact an answer named: its peer id and its record's wire string, unverified
    (read it, never change it; not frozen, as frozen ones cost twice as much to make)."""

    peer_id: str
    wire: str


#: Asks one contact (a verified record); returns the contacts it offered.
Query = Callable[[SignedPresence], Awaitable[list[Offer]]]
#: Verifies an offered record: the record (or the newest valid one of that peer), or None.
Check = Callable[[Offer], SignedPresence | None]


@dataclass
class LookupResult:
    """What a lookup found."""

    #: The k closest contacts that answered, closest first.
    closest: list[SignedPresence]
    #: The target's record when the lookup was for a peer and found it.
    found: SignedPresence | None = None
    #: Rounds of requests on the path that found the target (or the longest path).
    hops: int = 0
    #: Requests sent, and how many failed or timed out.
    queried: int = 0
    failed: int = 0
    responders: list[str] = field(default_factory=list)


@dataclass
class _Candidates:
    """What one lookup knows: verified records, unverified copies, how far each was."""

    key: int
    check: Check
    verified: dict[str, SignedPresence]
    depth: dict[str, int]
    copies: dict[str, list[Offer]] = field(default_factory=dict)
    tried: dict[str, int] = field(default_factory=dict)

    def distance(self, peer_id: str) -> int:
        return peer_key(peer_id) ^ self.key

    def offer(self, offer: Offer, hop: int) -> bool:
        """Note ``offer``; True when it is a copy not seen before of an unverified peer."""
        peer = offer.peer_id
        self.depth.setdefault(peer, hop)
        if peer in self.verified:
            return False
        copies = self.copies.setdefault(peer, [])
        if offer in copies or len(copies) + self.tried.get(peer, 0) >= MAX_COPIES:
            return False
        copies.append(offer)
        return True

    def record(self, peer: str) -> SignedPresence | None:
        """The verified record of ``peer``, verifying its copies until one holds."""
        record = self.verified.get(peer)
        copies = self.copies.pop(peer, [])
        while record is None and copies:
            self.tried[peer] = self.tried.get(peer, 0) + 1
            record = self.check(copies.pop(0))
            if record is not None and record.peer_id == peer:
                self.verified[peer] = record
            else:
                record = None
        return record


async def lookup(key: int, start: list[SignedPresence], query: Query, *, k: int = 20,
                 alpha: int = 3, target: str | None = None, deadline: float = 30.0,
                 stop_when: Callable[[], bool] = lambda: False,
                 check: Check) -> LookupResult:
    """Look up ``key`` starting from ``start`` (our own closest contacts, verified).

    ``query`` raises (any exception) when a contact fails. With ``target`` (a peer id)
    the lookup stops as soon as a valid record of that peer is offered. Offered records
    are verified with ``check`` only when used (asked, or the target's).
    """
    known = _Candidates(key, check, {r.peer_id: r for r in start},
                        {r.peer_id: 0 for r in start})
    asked: set[str] = set()
    failed: set[str] = set()
    refused: set[str] = set()  # failed because no copy of their record verified
    answered: list[str] = []
    result = LookupResult(closest=[])
    if target is not None and target in known.verified:
        result.found = known.verified[target]
        return result

    async def ask(record: SignedPresence) -> tuple[SignedPresence, list[Offer] | None]:
        try:
            return record, await query(record)
        except Exception:
            return record, None

    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    running: set[asyncio.Task[tuple[SignedPresence, list[Offer] | None]]] = set()
    try:
        while True:
            live = sorted((p for p in known.depth if p not in failed), key=known.distance)[:k]
            pending = [p for p in live if p not in asked]
            while pending and len(running) < alpha:
                peer = pending.pop(0)
                asked.add(peer)
                record = known.record(peer)  # its addresses are dialled: verify it first
                if record is None:
                    failed.add(peer)
                    refused.add(peer)
                    continue
                running.add(asyncio.ensure_future(ask(record)))
            if not running or stop_when():
                break
            timeout = end - loop.time()
            if timeout <= 0:
                break
            done, running = await asyncio.wait(running, timeout=timeout,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                record, offered = task.result()
                result.queried += 1
                if offered is None:
                    failed.add(record.peer_id)
                    result.failed += 1
                    continue
                answered.append(record.peer_id)
                hop = known.depth[record.peer_id] + 1
                result.hops = max(result.hops, hop) if result.found is None else result.hops
                named: set[str] = set()
                for offer in offered[: k * 2]:
                    if offer.peer_id in named:  # one copy of a peer per answer
                        continue
                    named.add(offer.peer_id)
                    fresh = known.offer(offer, hop)
                    peer = offer.peer_id
                    if fresh and peer in refused:
                        # A forged copy failed it; this other copy may be the genuine one.
                        refused.discard(peer)
                        failed.discard(peer)
                        asked.discard(peer)
                    if peer == target and result.found is None:
                        found = known.record(peer)
                        if found is not None:
                            result.found, result.hops = found, hop
            if result.found is not None:
                break
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    ok = set(answered)
    result.closest = sorted((known.verified[p] for p in ok),
                            key=lambda r: known.distance(r.peer_id))[:k]
    result.responders = answered
    return result
