"""Signed records on the wire, the gate that verifies them, and the provider store.

Peer records are :class:`p2phost_sdk.SignedPresence` in scope ``dht``; provider records
are the same, in scope ``dht-provider:KEY`` (so a node's record for one topic cannot be
replayed as a record for another). On the wire a record is one compact string (docs/wire.md,
the DHT section): the peer id, then base64 of the signed fields. The scope is not sent:
where the record travels says it, and the signature covers it, so a record moved to
another scope does not verify.

Every record a peer sends passes :class:`RecordGate` before anything trusts it: a forged,
expired or replayed record is dropped and counted. The gate knows the records it verified
by their exact string, so a record repeated in answer after answer costs one dictionary
look-up, and a record no lookup uses is never decoded at all.
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from p2phost_sdk import CLOCK_SKEW, AnnouncementError, PresenceBook, SignedPresence, is_peer_id

from ._keys import key_hex

#: The scope of peer records.
PEER_SCOPE = "dht"
#: The version of the DHT's messages (docs/wire.md): every request and reply says it, and a
#: node answers only its own (version 1, JSON records, said none).
WIRE_VERSION = 2
#: Characters of a peer id (base32 of a 32-byte key), the head of every wire record.
PEER_ID_LENGTH = 52
#: The longest wire record accepted (16 addresses of 255 bytes, in base64, and the rest).
MAX_RECORD_LENGTH = 6000
_FIXED = struct.Struct("!QQB")  # sequence, expiry, number of addresses
#: The longest a record may still be valid for when it arrives (seconds; the signer
#: chooses its expiry): a record meant to outlive its peer (signed for a century) would
#: hold a provider slot, or a place in the verified-record book, for as long as the
#: receiver runs. ``record-lifetime`` is at most this.
MAX_LIFETIME = 86400.0


def lives_too_long(record: SignedPresence, now: float) -> bool:
    """Whether ``record`` expires further ahead than :data:`MAX_LIFETIME` (and clock skew)."""
    return record.expires > (now + MAX_LIFETIME + CLOCK_SKEW) * 1000


def provider_scope(key: int) -> str:
    """The scope of provider records for the topic whose key is ``key``."""
    return f"dht-provider:{key_hex(key)}"


def encode(record: SignedPresence) -> str:
    """A record as its wire string: the peer id, then base64 of sequence, expiry (8 bytes
    each), the addresses (a count byte, then a length byte and UTF-8 each) and the 64-byte
    signature. The scope is left out (see the module's docstring)."""
    body = bytearray(_FIXED.pack(record.sequence, record.expires, len(record.addresses)))
    for address in record.addresses:
        raw = address.encode()
        body += bytes([len(raw)]) + raw
    body += record.signature
    return record.peer_id + base64.b64encode(bytes(body)).decode()


def wire_peer(raw: object) -> str | None:
    """The peer id a wire record names (not checked, verified or decoded: :func:`decode`
    does that when the record is used), or None when ``raw`` is not a wire record's size."""
    if type(raw) is str and PEER_ID_LENGTH < len(raw) <= MAX_RECORD_LENGTH:
        return raw[:PEER_ID_LENGTH]
    return None


def decode(raw: object, scope: str = PEER_SCOPE) -> SignedPresence:
    """A record in ``scope`` from its wire string, not yet verified; AnnouncementError
    when malformed."""
    # Explicit checks, not asserts: this parses what any peer sends, and ``python -O``
    # would strip asserts.
    try:
        peer_id = wire_peer(raw)
        if peer_id is None or not is_peer_id(peer_id) or not isinstance(raw, str):
            raise ValueError("no peer id")
        body = base64.b64decode(raw[PEER_ID_LENGTH:], validate=True)
        sequence, expires, count = _FIXED.unpack_from(body)
        offset, addresses = _FIXED.size, []
        for _ in range(count):
            length = body[offset]
            address = body[offset + 1:offset + 1 + length]
            if len(address) != length:
                raise ValueError("an address ends early")
            addresses.append(address.decode())
            offset += 1 + length
        signature = body[offset:]
        if len(signature) != 64 or sequence >= 2**63 or expires >= 2**63:
            raise ValueError("bad signature length, sequence or expiry")
    except (IndexError, ValueError, struct.error, binascii.Error) as exc:
        raise AnnouncementError("malformed: not a DHT record") from exc
    return SignedPresence(peer_id, scope, tuple(addresses), sequence, expires, False,
                          signature)


@dataclass
class RecordGate:
    """Verifies peer records once each, keeps the newest per peer, counts the rest."""

    clock: Callable[[], float] = time.time
    #: Most records remembered as verified, and as refused.
    remember: int = 4096
    book: PresenceBook = field(init=False)
    #: The newest verified record of each peer, beside its wire string (encoded once).
    _wire: dict[str, tuple[SignedPresence, str]] = field(default_factory=dict)
    #: Wire strings this gate verified, and ones it refused as forged (not checked twice).
    _verified: dict[str, SignedPresence] = field(default_factory=dict)
    _forged: set[str] = field(default_factory=set)
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
        if isinstance(raw, str) and raw in self._forged:
            self.book.rejected["bad signature"] += 1
            return None
        try:
            record = decode(raw)
        except AnnouncementError:
            self.refused["malformed"] += 1
            return None
        forged = self.book.rejected["bad signature"]
        checked = self.check(record, expect=expect)
        if checked is None and self.book.rejected["bad signature"] > forged:
            self._remember(self._forged, raw)  # a repeat costs a look-up, not a verify
        return checked

    def known(self, raw: object) -> SignedPresence | None:
        """The record ``raw`` is, string for string, when this gate already verified it and
        it is still its peer's newest and current; else None (decode and :meth:`check` it).
        No decoding, no verifying: an answer repeats records this node mostly knows."""
        record = self._verified.get(raw) if isinstance(raw, str) else None
        if (record is None or record is not self.book.newest(record.peer_id)
                or not self._current(record)):
            return None
        return record

    def wire_form(self, record: SignedPresence) -> str:
        """:func:`encode` of ``record``, encoded once when it is a record this gate
        verified: a node sends the same records in every answer."""
        return self.wire_forms((record,))[0]

    def wire_forms(self, records: Iterable[SignedPresence]) -> list[str]:
        """:meth:`wire_form` of each of ``records`` (an answer's k in one call)."""
        known, out = self._wire, []
        for record in records:
            seen = known.get(record.peer_id)
            # The same object: the same fields, so the same string.
            out.append(seen[1] if seen is not None and seen[0] is record else encode(record))
        return out

    def _current(self, record: SignedPresence) -> bool:
        # A repeat is not verified again, but a record that expired since must not count.
        return record.expires + CLOCK_SKEW * 1000 >= self.clock() * 1000

    def check(self, record: SignedPresence, *,
              expect: str | None = None) -> SignedPresence | None:
        """``record`` (decoded, not yet verified) if it verifies: see :meth:`peer`."""
        if record.scope != PEER_SCOPE or (expect is not None and record.peer_id != expect):
            self.refused["wrong scope or peer"] += 1
            return None
        if lives_too_long(record, self.clock()):
            self.refused["lifetime too long"] += 1
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
        if len(self._wire) > self.remember:
            self._wire.clear()
        wire = encode(record)
        self._wire[record.peer_id] = (record, wire)
        self._remember(self._verified, wire, record)
        return record

    def _remember(self, memory: dict[str, SignedPresence] | set[str], wire: object,
                  record: SignedPresence | None = None) -> None:
        if not isinstance(wire, str):
            return
        if len(memory) >= self.remember:
            memory.clear()  # cheap and bounded; what is still in use comes back at once
        if isinstance(memory, dict):
            assert record is not None
            memory[wire] = record
        else:
            memory.add(wire)

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
    #: Topic keys one peer may provide here: one peer must not take every key.
    max_per_peer: int = 64
    clock: Callable[[], float] = time.time
    counters: Counter[str] = field(default_factory=Counter)
    _providers: dict[int, dict[str, SignedPresence]] = field(default_factory=dict)
    _keys_of: Counter[str] = field(default_factory=Counter)

    def add(self, key: int, raw: object, *, sender: str | None = None) -> bool:
        """Store the provider record ``raw`` under ``key``; False (counted) when refused
        (a record signed for another key does not verify in this key's scope). With
        ``sender`` (the peer that asked to store it), only that peer's own record is
        stored: else one peer could fill every slot with records of throwaway keys."""
        try:
            record = decode(raw, provider_scope(key))
            record.check(now=self.clock())
        except AnnouncementError as exc:
            self.counters[exc.reason] += 1
            return False
        if sender is not None and record.peer_id != sender:
            self.counters["not the sender's"] += 1
            return False
        if lives_too_long(record, self.clock()):
            self.counters["lifetime too long"] += 1
            return False
        self._expire(key)
        providers = self._providers.get(key)
        if (record.peer_id not in (providers or {})
                and self._keys_of[record.peer_id] >= self.max_per_peer):
            self.counters["peer full"] += 1
            return False
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
        if current is None:
            self._keys_of[record.peer_id] += 1
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
            self._keys_of[peer_id] -= 1
            if self._keys_of[peer_id] <= 0:
                del self._keys_of[peer_id]
        if not providers:
            del self._providers[key]
