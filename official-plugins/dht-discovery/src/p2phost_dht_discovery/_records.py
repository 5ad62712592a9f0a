"""Signed records on the wire, the gate that verifies them, and the provider store.

Peer records are :class:`p2phost_sdk.SignedPresence` in scope ``dht``; provider records
are the same, in scope ``dht-provider:KEY`` (so a node's record for one topic cannot be
replayed as a record for another). Every record a peer sends passes :class:`RecordGate`
before anything else sees it: a forged, expired or replayed record is dropped and counted.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2phost_sdk import CLOCK_SKEW, AnnouncementError, PresenceBook, SignedPresence, is_peer_id

from ._keys import key_hex

#: The scope of peer records.
PEER_SCOPE = "dht"


def provider_scope(key: int) -> str:
    """The scope of provider records for the topic whose key is ``key``."""
    return f"dht-provider:{key_hex(key)}"


def encode(record: SignedPresence) -> dict[str, Any]:
    """A record as a JSON-able mapping (docs/wire.md, the DHT section)."""
    return {"id": record.peer_id, "scope": record.scope, "addrs": list(record.addresses),
            "seq": record.sequence, "exp": record.expires,
            "sig": base64.b64encode(record.signature).decode()}


def decode(raw: object) -> SignedPresence:
    """A record from the wire, not yet verified; AnnouncementError when malformed."""
    try:
        assert isinstance(raw, dict)
        peer_id, scope, addrs = raw["id"], raw["scope"], raw["addrs"]
        seq, exp, sig = raw["seq"], raw["exp"], raw["sig"]
        assert isinstance(peer_id, str) and is_peer_id(peer_id)
        assert isinstance(scope, str) and len(scope) < 128
        assert isinstance(addrs, list) and all(isinstance(a, str) for a in addrs)
        assert isinstance(seq, int) and isinstance(exp, int) and 0 <= seq < 2**63
        assert 0 <= exp < 2**63 and isinstance(sig, str) and len(sig) < 100
        signature = base64.b64decode(sig, validate=True)
    except (AssertionError, KeyError, ValueError, TypeError) as exc:
        raise AnnouncementError("malformed: not a DHT record") from exc
    return SignedPresence(peer_id, scope, tuple(addrs), seq, exp, False, signature)


@dataclass
class RecordGate:
    """Verifies peer records once each, keeps the newest per peer, counts the rest."""

    clock: Callable[[], float] = time.time
    book: PresenceBook = field(init=False)
    #: The newest verified record of each peer, beside its wire form (encoded once).
    _wire: dict[str, tuple[SignedPresence, dict[str, Any]]] = field(default_factory=dict)
    #: Records refused for a reason the book does not count (wrong scope, wrong peer).
    refused: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.book = PresenceBook(clock=self.clock)

    def peer(self, raw: object, *, expect: str | None = None) -> SignedPresence | None:
        """The verified peer record in ``raw`` (the newest known when ``raw`` is older),
        or None, counted, when it is forged, expired, malformed or not ``expect``'s."""
        seen = self.known(raw)
        if seen is not None and (expect is None or expect == seen.peer_id):
            return seen
        try:
            record = decode(raw)
        except AnnouncementError:
            self.refused["malformed"] += 1
            return None
        return self.check(record, expect=expect)

    def known(self, raw: object) -> SignedPresence | None:
        """The record ``raw`` is, byte for byte, when this gate already verified it and it
        is still its peer's newest and current; else None (decode and :meth:`check` it).
        No decoding, no verifying: an answer repeats records this node mostly knows."""
        if not isinstance(raw, dict):
            return None
        seen = self._wire.get(raw.get("id"))  # type: ignore[arg-type]
        if seen is None or seen[1]["sig"] != raw.get("sig"):
            return None
        record, wire = seen
        if (record is not self.book.newest(record.peer_id) or not self._current(record)
                or raw != wire):
            return None
        return record

    def wire_form(self, record: SignedPresence) -> dict[str, Any]:
        """:func:`encode` of ``record``, shared when it is a record this gate verified: read
        it or send it, never change it. A node sends the same records in every answer."""
        seen = self._wire.get(record.peer_id)
        if seen is not None and seen[0] is record:  # the same object: the same fields
            return seen[1]
        return encode(record)

    def _current(self, record: SignedPresence) -> bool:
        # A repeat is not verified again, but a record that expired since must not count.
        return record.expires + CLOCK_SKEW * 1000 >= self.clock() * 1000

    def check(self, record: SignedPresence, *,
              expect: str | None = None) -> SignedPresence | None:
        """``record`` (decoded, not yet verified) if it verifies: see :meth:`peer`."""
        if record.scope != PEER_SCOPE or (expect is not None and record.peer_id != expect):
            self.refused["wrong scope or peer"] += 1
            return None
        newest = self.book.newest(record.peer_id)
        if newest is not None and not self._current(newest):
            # The book repeats its newest without a second look: make sure it still counts.
            if newest == record:
                self.book.rejected["expired"] += 1
                return None
            newest = None
        if newest is not None and newest == record:
            return newest
        try:
            self.book.accept(record)
        except AnnouncementError as exc:
            if exc.reason == "stale" and newest is not None:
                # An older copy relayed by a third peer: not an attack; use the newest.
                return newest
            return None
        if len(self._wire) > 4096:
            self._wire.clear()
        self._wire[record.peer_id] = (record, encode(record))
        return record

    def counters(self) -> dict[str, int]:
        """Records accepted and refused by reason."""
        counts = self.book.counters()
        counts.update(self.refused)
        return counts


@dataclass
class ProviderStore:
    """Who provides which topic key: bounded in keys and providers per key, expiring."""

    max_keys: int = 1024
    max_per_key: int = 20
    clock: Callable[[], float] = time.time
    counters: Counter[str] = field(default_factory=Counter)
    _providers: dict[int, dict[str, SignedPresence]] = field(default_factory=dict)

    def add(self, key: int, raw: object) -> bool:
        """Store the provider record ``raw`` under ``key``; False (counted) when refused."""
        try:
            record = decode(raw)
            if record.scope != provider_scope(key):
                raise AnnouncementError("malformed: provider record for another key")
            record.check(now=self.clock())
        except AnnouncementError as exc:
            self.counters[exc.reason] += 1
            return False
        self._expire(key)
        providers = self._providers.get(key)
        if providers is None:
            if len(self._providers) >= self.max_keys:
                self.counters["store full"] += 1
                return False
            providers = self._providers[key] = {}
        current = providers.get(record.peer_id)
        if current is not None and record.sequence <= current.sequence:
            if record != current:
                self.counters["stale"] += 1
            return current == record
        if current is None and len(providers) >= self.max_per_key:
            self.counters["key full"] += 1
            return False
        providers[record.peer_id] = record
        self.counters["stored"] += 1
        return True

    def get(self, key: int) -> list[SignedPresence]:
        """The current providers of ``key``."""
        self._expire(key)
        return list(self._providers.get(key, {}).values())

    def _expire(self, key: int) -> None:
        providers = self._providers.get(key)
        if providers is None:
            return
        now_ms = self.clock() * 1000
        for peer_id in [p for p, r in providers.items() if r.expires < now_ms]:
            del providers[peer_id]
        if not providers:
            del self._providers[key]
