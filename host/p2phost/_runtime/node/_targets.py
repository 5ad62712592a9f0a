"""Dial targets that belong to discovery records.

A target is a peer some current record lists (or an address with no peer id: static
peers, ``[node] connect``, the outbox). It lives exactly as long as a record does: when
every plugin that reported the peer has lost it, the target, its redial loop and its
backoff are gone. One loop per peer tries the peer's addresses in turn and, once
connected, waits until the peer is gone; an address where another peer answers ("expected
peer A, reached B") is dropped at once and counted, never redialled, until a record with
new addresses arrives. Several plugins reporting one peer merge: the union of their
addresses is dialled. A connection that ends before it held for the backoff's maximum (a
peer that refused us after the hellos, one that crashes at once) counts as a failed dial:
the next dial backs off further, and a refusal is counted ``refused`` with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2phost_sdk import Backoff, PeerRecord, PeerUnavailable

from .._errors import ConnectionRefusedByPeer, refusal_of, refused

log = logging.getLogger("p2phost.node")

#: The names of :attr:`DialTargets.counters`.
COUNTERS = ("dials", "unreachable", "refused", "wrong_peer", "connected")


class Connected(Protocol):
    """A connected peer as a redial loop sees it (the peer table's ``Peer``)."""

    #: Set when its last connection ended.
    gone: asyncio.Event
    #: Why its last connection ended ("" until it did).
    reason: str
    #: The peer's refusal that ended it, if its GOODBYE was one.
    refusal: ConnectionRefusedByPeer | None


def is_wrong_peer(error: Exception) -> bool:
    """Whether a failed dial reached a peer other than the one the record announced
    (this node itself included)."""
    text = str(error)
    return "handshake failed: expected peer " in text or "handshake failed: connected to " \
        "itself" in text


def refusal(error: Exception) -> str:
    """Why a failed dial's peer was reached and the handshake refused, by it (its limits,
    its trust policy, its shutdown) or by this node's trust policy: its error ("" when
    the peer was not reached, or the handshake failed otherwise)."""
    return str(error) if refused(error) else ""


@dataclass
class _Target:
    peer_id: str | None
    records: dict[str, PeerRecord] = field(default_factory=dict)
    #: Addresses where another peer answered; skipped until the records change.
    wrong: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    #: The peer an id-less target turned out to be.
    learned: str | None = None

    def addresses(self) -> list[str]:
        listed = [a for r in self.records.values() for a in r.addresses]
        return [a for a in dict.fromkeys(listed) if a not in self.wrong]


class DialTargets:
    """Which peers to keep connected, from which records; one redial loop per peer."""

    def __init__(
        self,
        *,
        connect: Callable[[str, str | None], Awaitable[str]],
        gone: Callable[[str], Connected | None],
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
        backoff: Backoff,
        own_addresses: Callable[[], list[str]],
    ) -> None:
        self._connect = connect
        self._gone = gone
        self._spawn = spawn
        self._backoff = backoff
        self._own = own_addresses
        self._targets: dict[str, _Target] = {}
        self.counters: Counter[str] = Counter()
        #: The last refusal's error (why), shown beside the counters, and its fix when
        #: it has its own (the peer's limits): the control socket's answer carries both,
        #: so ``doctor`` need not read the fix out of the words.
        self.refused_reason = ""
        self.refused_fix = ""
        self.closed = False

    @staticmethod
    def keys(record: PeerRecord) -> list[str]:
        """The targets ``record`` feeds: its peer, or one per address when id-less."""
        return [record.peer_id] if record.peer_id else [f"address {a}" for a in record.addresses]

    def __contains__(self, key: str) -> bool:
        return key in self._targets

    def busy(self) -> set[str]:
        """Every peer being dialled or kept connected (``address ADDR`` while unknown)."""
        return {t.peer_id or t.learned or key for key, t in self._targets.items()}

    def keeps(self, peer_id: str, peer_at: Callable[[str], str | None], *,
              ignore: str) -> bool:
        """Whether a record not from source ``ignore`` keeps ``peer_id`` connected: its
        target's, or an id-less one's that found it (or whose address ``peer_at`` says
        it was last reached at)."""
        for target in self._targets.values():
            if not any(source != ignore for source in target.records):
                continue
            if peer_id in (target.peer_id, target.learned) or (
                    target.peer_id is None
                    and any(peer_at(a) == peer_id
                            for r in target.records.values() for a in r.addresses)):
                return True
        return False

    def update(self, record: PeerRecord) -> None:
        """A plugin found (or re-found) ``record``: it replaces that plugin's last one."""
        if self.closed:
            return
        own = set(self._own())
        for key in self.keys(record):
            addresses = tuple(a for a in record.addresses if a not in own)
            if record.peer_id is None:
                addresses = tuple(a for a in addresses if key == f"address {a}")
            if not addresses:
                continue
            target = self._targets.get(key)
            if target is None:
                target = self._targets[key] = _Target(record.peer_id)
            previous = target.records.get(record.source)
            target.records[record.source] = PeerRecord(addresses, record.peer_id, record.source)
            if previous is None or previous.addresses != addresses:
                target.wrong.clear()  # new addresses: each gets one honest try
            if target.task is None or target.task.done():
                target.task = self._spawn(self._supervise(key, target), f"dial {key[:20]}")

    def lost(self, record: PeerRecord) -> None:
        """A plugin lost ``record``'s peer: its record no longer feeds the target."""
        for key in self.keys(record):
            target = self._targets.get(key)
            if target is None:
                continue
            target.records.pop(record.source, None)
            if not target.records:
                self._drop(key)

    def close(self) -> None:
        """Stop every redial loop (the node is closing)."""
        self.closed = True
        for key in list(self._targets):
            self._drop(key)

    def _drop(self, key: str) -> None:
        target = self._targets.pop(key)
        if target.task is not None:
            target.task.cancel()

    def snapshot(self) -> dict[str, object]:
        """Targets and counters, for ``p2phost peers``."""
        answer: dict[str, object] = {"targets": len(self._targets),
                                     **{name: self.counters[name] for name in COUNTERS}}
        if self.refused_reason:
            answer["refused_reason"] = self.refused_reason
        if self.refused_fix:
            answer["refused_fix"] = self.refused_fix
        return answer

    async def _supervise(self, key: str, target: _Target) -> None:
        failures = 0  # failed dials and short-lived connections in a row: the backoff
        dials_failed = 0  # failed dials since the last connection
        logged = ""  # the refusal last logged ("" none: the peer was not reached)
        peer_id = target.peer_id
        while True:
            link = self._gone(peer_id) if peer_id else None
            if link is not None:  # connected (by us, by them, through another plugin)
                opened = time.monotonic()
                await link.gone.wait()
                if time.monotonic() - opened >= self._backoff.maximum:
                    failures = 0  # it held: the next loss starts the backoff over
                    await asyncio.sleep(self._backoff.delay(0))
                    continue
                # It went at once: a refusal after the hellos (a peer older than the
                # listener's checks before its hello), or a peer that fails as it starts.
                # Redialling at once would loop.
                if link.refusal is not None:
                    reason = link.reason
                    self.counters["refused"] += 1
                    # Its fix with it (an older listener's peer limit has its own, not
                    # the trust policy's that doctor gives a refusal without one).
                    self.refused_reason = reason
                    self.refused_fix = link.refusal.fix or ""
                    if reason != logged:
                        log.warning("peer %s ended the connection as it opened (will "
                                    "retry): %s", peer_id, reason)
                        logged = reason
                await asyncio.sleep(self._backoff.delay(failures))
                failures += 1
                continue
            addresses = target.addresses()
            if not addresses:  # every listed address reached someone else
                log.warning("no address left to dial %s (every one reached another peer); "
                            "waiting for a new record", key)
                target.task = None
                return
            errors: list[str] = []
            last_refused = ""  # errors[-1] when it is a refusal
            for address in addresses:
                self.counters["dials"] += 1
                try:
                    peer_id = await self._connect(address, target.peer_id)
                except PeerUnavailable as exc:
                    if target.peer_id and is_wrong_peer(exc):
                        target.wrong.add(address)
                        self.counters["wrong_peer"] += 1
                        log.warning("dropped address %s of %s: %s", address, target.peer_id,
                                    exc)
                    elif reason := refusal(exc):
                        self.counters["refused"] += 1
                        self.refused_reason = reason
                        by_peer = refusal_of(exc)
                        self.refused_fix = (by_peer.fix or "") if by_peer else ""
                        errors.append(reason)
                        last_refused = reason
                    else:
                        self.counters["unreachable"] += 1
                        errors.append(str(exc))
                        last_refused = ""
                    continue
                self.counters["connected"] += 1
                target.learned = peer_id
                if dials_failed:
                    log.info("reconnected to %s after %d failed attempts", address,
                             dials_failed)
                dials_failed = 0
                break
            else:
                # The first failure and every tenth are logged; so is, at once, a refusal
                # other than the last logged: a peer that was down and now refuses us (its
                # trust policy) says what to do, and backoff would hold it back ~20 s.
                if errors and (dials_failed == 0 or dials_failed % 10 == 9
                               or last_refused != logged):
                    log.warning("cannot connect to %s (will retry): %s", ", ".join(addresses),
                                errors[-1])
                    logged = last_refused
                if errors:
                    await asyncio.sleep(self._backoff.delay(failures))
                    failures += 1
                    dials_failed += 1
