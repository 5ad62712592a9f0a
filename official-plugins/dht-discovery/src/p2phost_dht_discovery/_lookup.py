"""The iterative lookup: ask the alpha closest unasked contacts, learn closer ones, repeat.

Nothing a peer answers is trusted beyond its signatures: a contact enters the candidate
list only with a valid record, answers are only ever *candidates* (never "the closest"
until asked themselves), and the lookup ends when the k closest candidates have all been
asked, or failed, or its deadline passed. A peer that answers every lookup with itself
therefore only spends one of the alpha slots once per lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from p2phost_sdk import SignedPresence

from ._keys import peer_key

#: Asks one contact; returns the records it offered (and, when it has it, the value).
Query = Callable[[SignedPresence], Awaitable[list[SignedPresence] | None]]
#: Verifies a record an answer offered: the record, the newest valid one, or None.
Check = Callable[[SignedPresence], SignedPresence | None]


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


async def lookup(key: int, start: list[SignedPresence], query: Query, *, k: int = 20,
                 alpha: int = 3, target: str | None = None, deadline: float = 30.0,
                 stop_when: Callable[[], bool] = lambda: False,
                 check: Check = lambda record: record) -> LookupResult:
    """Look up ``key`` starting from ``start`` (our own closest contacts).

    ``query`` raises (any exception) when a contact fails. With ``target`` (a peer id)
    the lookup stops as soon as a valid record of that peer is offered. Offered records
    are verified with ``check`` only when used (asked, or the target): verifying all k
    of every answer would cost more than the requests themselves.
    """
    depth: dict[str, int] = {r.peer_id: 0 for r in start}
    known: dict[str, SignedPresence] = {r.peer_id: r for r in start}
    verified: set[str] = set(known)
    asked: set[str] = set()
    failed: set[str] = set()
    answered: list[str] = []
    result = LookupResult(closest=[])
    if target is not None and target in known:
        result.found = known[target]
        return result

    def distance(peer_id: str) -> int:
        return peer_key(peer_id) ^ key

    async def ask(record: SignedPresence) -> tuple[SignedPresence, list[SignedPresence] | None]:
        try:
            return record, await query(record)
        except Exception:
            return record, None

    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    running: set[asyncio.Task[tuple[SignedPresence, list[SignedPresence] | None]]] = set()
    try:
        while True:
            live = sorted((p for p in known if p not in failed), key=distance)[:k]
            pending = [p for p in live if p not in asked]
            while pending and len(running) < alpha:
                peer = pending.pop(0)
                asked.add(peer)
                if peer not in verified:
                    valid = check(known[peer])
                    if valid is None:
                        failed.add(peer)
                        continue
                    known[peer] = valid
                    verified.add(peer)
                running.add(asyncio.ensure_future(ask(known[peer])))
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
                hop = depth[record.peer_id] + 1
                result.hops = max(result.hops, hop) if result.found is None else result.hops
                for offer in offered[: k * 2]:
                    peer = offer.peer_id
                    if peer not in known:
                        known[peer], depth[peer] = offer, hop
                    elif offer != known[peer] and peer not in asked:
                        # Another copy: a forged first copy must not hide the genuine one.
                        valid = check(offer)
                        if valid is not None:
                            known[peer], depth[peer] = valid, hop
                            verified.add(peer)
                            failed.discard(peer)
                    if peer == target and result.found is None:
                        valid = known[peer] if peer in verified else check(offer)
                        if valid is not None and valid.peer_id == target:
                            result.found, result.hops = valid, hop
                        else:
                            failed.add(peer)  # checked once is enough
            if result.found is not None:
                break
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    ok = set(answered)
    result.closest = sorted((known[p] for p in ok), key=lambda r: distance(r.peer_id))[:k]
    result.responders = answered
    return result
