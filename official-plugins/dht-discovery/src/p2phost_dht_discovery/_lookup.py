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
from collections import deque
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


class DialBudget:
    """The distinct peers a series of lookups (a join) may ask, at most ``total``: asking
    a peer again is free (its connection is open), a new one spends one."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.asked: set[str] = set()

    def allows(self, peer_id: str) -> bool:
        """Whether ``peer_id`` may be asked."""
        return peer_id in self.asked or len(self.asked) < self.total

    def spend(self, peer_id: str) -> None:
        """``peer_id`` is being asked."""
        self.asked.add(peer_id)

    @property
    def spent(self) -> bool:
        """No new peer may be asked any more."""
        return len(self.asked) >= self.total


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
    #: Each candidate's distance to the key, computed once (the lookup sorts by it often).
    distance: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for peer in self.depth:
            self.distance[peer] = peer_key(peer) ^ self.key

    def closest(self, failed: set[str], k: int) -> list[str]:
        """The ``k`` closest candidates not ``failed``."""
        return sorted((p for p in self.distance if p not in failed),
                      key=self.distance.__getitem__)[:k]

    def offer(self, offer: Offer, hop: int) -> bool:
        """Note ``offer``; True when it is a copy not seen before of an unverified peer."""
        peer = offer.peer_id
        if peer not in self.depth:
            self.depth[peer] = hop
            self.distance[peer] = peer_key(peer) ^ self.key
        elif peer in self.verified:
            return False
        copies = self.copies.get(peer)
        if copies is None:
            copies = self.copies[peer] = []
        elif offer in copies:
            return False
        if len(copies) + self.tried.get(peer, 0) >= MAX_COPIES:
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
                 check: Check, budget: DialBudget | None = None) -> LookupResult:
    """Look up ``key`` starting from ``start`` (our own closest contacts, verified).

    ``query`` raises (any exception) when a contact fails. With ``target`` (a peer id)
    the lookup stops as soon as a valid record of that peer is offered. Offered records
    are verified with ``check`` only when used (asked, or the target's). With a
    ``budget``, only the peers it allows are asked (the others are passed over).
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
    loop = asyncio.get_running_loop()
    # Each request is a task (the Rpc is a coroutine) that hands its answer over and
    # wakes the lookup itself: the lookup runs in the loop turn after an answer, where
    # waiting on the tasks' completion (asyncio.wait) takes two more.
    running: dict[str, asyncio.Task[None]] = {}
    answers: deque[tuple[SignedPresence, list[Offer] | None]] = deque()
    wake: list[asyncio.Future[None]] = []

    def woken() -> None:
        if wake and not wake[0].done():
            wake[0].set_result(None)

    async def ask(record: SignedPresence) -> None:
        try:
            answers.append((record, await query(record)))
        except Exception:
            answers.append((record, None))
        finally:
            running.pop(record.peer_id, None)
            woken()

    end = loop.time() + deadline
    timer = loop.call_at(end, woken)
    try:
        while True:
            while answers and result.found is None:  # every answer in, before asking more
                record, offered = answers.popleft()
                result.queried += 1
                if offered is None:
                    failed.add(record.peer_id)
                    result.failed += 1
                    continue
                answered.append(record.peer_id)
                hop = known.depth[record.peer_id] + 1
                result.hops = max(result.hops, hop)
                if _learn(known, offered[: k * 2], hop, refused, failed, asked, target):
                    result.found, result.hops = known.verified[target or ""], hop
            if result.found is not None or stop_when() or loop.time() >= end:
                break
            pending = [p for p in known.closest(failed, k) if p not in asked]
            while pending and len(running) < alpha:
                peer = pending.pop(0)
                if budget is not None and not budget.allows(peer):
                    continue
                asked.add(peer)
                contact = known.record(peer)  # its addresses are dialled: verify it first
                if contact is None:
                    failed.add(peer)
                    refused.add(peer)
                    continue
                if budget is not None:
                    budget.spend(peer)
                running[peer] = asyncio.ensure_future(ask(contact))
            if not running:
                break
            wake[:] = [loop.create_future()]
            await wake[0]
    finally:
        timer.cancel()
        await _cancel(running)
    ok = set(answered)
    result.closest = [known.verified[p] for p in sorted(ok, key=known.distance.__getitem__)[:k]]
    result.responders = answered
    return result


def _learn(known: _Candidates, offered: list[Offer], hop: int, refused: set[str],
           failed: set[str], asked: set[str], target: str | None) -> bool:
    """Add one answer's offers to ``known``; True when it held a valid record of
    ``target`` (verified now: ``known.verified[target]``)."""
    named: set[str] = set()
    for offer in offered:
        peer = offer.peer_id
        if peer in named:  # one copy of a peer per answer
            continue
        named.add(peer)
        if known.offer(offer, hop) and peer in refused:
            # A forged copy failed it; this other copy may be the genuine one.
            refused.discard(peer)
            failed.discard(peer)
            asked.discard(peer)
        if peer == target and known.record(peer) is not None:
            return True
    return False


async def _cancel(running: dict[str, asyncio.Task[None]]) -> None:
    """Cancel the requests still in flight and wait until they are all done."""
    if not running:
        return
    tasks = list(running.values())
    for task in tasks:
        task.cancel()
    # One turn is enough for a request that was waiting for its answer; wait for any
    # that still is not done (a cancelled Rpc may await its own clean-up).
    await asyncio.sleep(0)
    pending = [task for task in tasks if not task.done()]
    if pending:
        await asyncio.wait(pending)
