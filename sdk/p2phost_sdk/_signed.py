"""Signed presence: what a peer announces about itself, provably from that peer.

A presence record carries a peer's addresses, a sequence number (milliseconds since the
epoch when it was signed, strictly increasing per node), an expiry (the same clock) and a
goodbye flag, all signed with the peer's Ed25519 key. The peer id *is* that key, so anyone
can check a record without a look-up. Whatever medium carries the fields (a beacon, a DNS-SD
TXT record, a JSON object on a broker, a DHT value), the signature covers
:func:`presence_payload`, which begins with a fixed domain string so a presence signature
can never be mistaken for any other signature the node makes.

Receivers keep the newest record per peer (:class:`PresenceBook`): a record whose signature
does not verify, that has expired, or that is older than the newest seen is dropped and
counted before anything is dialled.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._errors import REJECT_REASONS, AnnouncementError
from ._identity import Identity, verify
from ._peer_ids import peer_id_from_public_key, public_key_from_peer_id
from ._presence import MAX_ADDRESS_LENGTH, MAX_ADDRESSES

_DOMAIN = b"p2phost presence v1\x00"
_FIELDS = struct.Struct("!QQB")
FLAG_GOODBYE = 0x01
#: Seconds a record's clock may run ahead of ours, or its expiry behind, and still count:
#: hosts on a LAN rarely agree to the second.
CLOCK_SKEW = 30.0
#: Length of an Ed25519 signature.
SIGNATURE_LENGTH = 64


def _now_ms() -> int:
    return int(time.time() * 1000)


def presence_payload(scope: str, sequence: int, expires: int, goodbye: bool,
                     addresses: Sequence[str]) -> bytes:
    """The bytes a presence signature covers (the signer's key is the peer id)."""
    raw_scope = scope.encode()
    out = bytearray(_DOMAIN)
    out += bytes([len(raw_scope)]) + raw_scope
    out += _FIELDS.pack(sequence, expires, FLAG_GOODBYE if goodbye else 0)
    out += bytes([len(addresses)])
    for address in addresses:
        raw = address.encode()
        out += bytes([len(raw)]) + raw
    return bytes(out)


@dataclass(frozen=True)
class SignedPresence:
    """One signed announcement of ``peer_id`` (a goodbye carries no addresses)."""

    peer_id: str
    scope: str
    addresses: tuple[str, ...]
    #: Milliseconds since the epoch when signed; a later record has a larger one.
    sequence: int
    #: Milliseconds since the epoch after which the record no longer counts.
    expires: int
    goodbye: bool
    signature: bytes

    def payload(self) -> bytes:
        """The bytes :attr:`signature` covers."""
        return presence_payload(self.scope, self.sequence, self.expires, self.goodbye,
                                self.addresses)

    def to_bytes(self) -> bytes:
        """The record as bytes (for media with no format of their own, e.g. a DHT value):
        the 32-byte key, the signed payload without its domain, then the signature."""
        return (public_key_from_peer_id(self.peer_id) + self.payload()[len(_DOMAIN):]
                + self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPresence:
        """Parse :meth:`to_bytes` (NOT verified: see :meth:`check`); AnnouncementError when
        malformed."""
        try:
            key, offset = data[:32], 32
            scope = data[offset + 1:offset + 1 + data[offset]].decode()
            offset += 1 + data[offset]
            sequence, expires, flags = _FIELDS.unpack_from(data, offset)
            offset += _FIELDS.size
            count, offset = data[offset], offset + 1
            addresses = []
            for _ in range(count):
                length = data[offset]
                raw = data[offset + 1:offset + 1 + length]
                if len(raw) != length:
                    raise ValueError("truncated address")
                addresses.append(raw.decode())
                offset += 1 + length
            signature = data[offset:]
            peer_id = peer_id_from_public_key(key)
        except (IndexError, ValueError, struct.error) as exc:
            raise AnnouncementError(f"malformed: presence record: {exc}") from exc
        if len(signature) != SIGNATURE_LENGTH:
            raise AnnouncementError("malformed: presence record of the wrong length")
        return cls(peer_id, scope, tuple(addresses), sequence, expires,
                   bool(flags & FLAG_GOODBYE), signature)

    def check(self, *, now: float | None = None) -> SignedPresence:
        """This record if its signature verifies and it is current; else AnnouncementError.

        The error's first words name the reason (``bad signature`` or ``expired``).
        """
        if len(self.signature) != SIGNATURE_LENGTH:
            raise AnnouncementError("bad signature: not 64 bytes")
        if len(self.addresses) > MAX_ADDRESSES or any(
                len(a.encode()) > MAX_ADDRESS_LENGTH for a in self.addresses):
            raise AnnouncementError("malformed: too many or too long addresses")
        clock = time.time() if now is None else now
        skew = CLOCK_SKEW * 1000
        if self.expires + skew < clock * 1000 or self.sequence > self.expires:
            raise AnnouncementError(f"expired: record of {self.peer_id} expired")
        if self.sequence - skew > clock * 1000:
            raise AnnouncementError(f"expired: record of {self.peer_id} is from the future")
        if not verify(self.peer_id, self.signature, self.payload()):
            raise AnnouncementError(f"bad signature: record does not verify as {self.peer_id}")
        return self


class PresenceSigner:
    """Signs this node's presence records with strictly increasing sequence numbers.

    One per node, shared by every discovery plugin, so no two records of the node carry
    the same sequence and a later one always wins at the receivers.
    """

    def __init__(self, identity: Identity, clock: Callable[[], int] = _now_ms) -> None:
        self._identity = identity
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()  # plugins may sign from a zeroconf thread

    @property
    def peer_id(self) -> str:
        """Whose records these are."""
        return self._identity.peer_id

    def sign(self, scope: str, addresses: Sequence[str], *, lifetime: float,
             goodbye: bool = False) -> SignedPresence:
        """A record of ``addresses`` in ``scope`` valid for ``lifetime`` seconds."""
        with self._lock:
            sequence = self._last = max(self._last + 1, self._clock())
        expires = sequence + int(lifetime * 1000)
        listed = () if goodbye else tuple(addresses)
        signature = self._identity.sign(presence_payload(scope, sequence, expires, goodbye,
                                                         listed))
        return SignedPresence(self.peer_id, scope, listed, sequence, expires, goodbye,
                              signature)


@dataclass
class PresenceBook:
    """The newest valid record per peer, and counters of every record dropped.

    :meth:`accept` is the gate between the network and ``peer_found``/``peer_lost``: it
    verifies, refuses replays of older records, and keeps counts by reason.
    """

    clock: Callable[[], float] = time.time
    #: Records dropped, by reason (:data:`REJECT_REASONS`).
    rejected: Counter[str] = field(default_factory=Counter)
    #: Valid records accepted.
    accepted: int = 0
    _newest: dict[str, SignedPresence] = field(default_factory=dict)

    def accept(self, record: SignedPresence) -> bool:
        """True when ``record`` is news (newer than any seen of its peer), False for a repeat
        of the newest (not verified again). AnnouncementError, counted, when it does not
        verify, expired, or is older than (or conflicts with) the newest.
        """
        newest = self._newest.get(record.peer_id)
        if newest is not None and record.sequence <= newest.sequence:
            if record == newest:
                return False
            self.rejected["stale"] += 1
            raise AnnouncementError(f"stale: record {record.sequence} of {record.peer_id} is "
                                    f"not newer than {newest.sequence}")
        try:
            record.check(now=self.clock())
        except AnnouncementError as exc:
            self.rejected[exc.reason] += 1
            raise
        if len(self._newest) > 4096:  # a flood of valid keys must not grow this forever
            self.prune()
        self._newest[record.peer_id] = record
        self.accepted += 1
        return True

    def newest(self, peer_id: str) -> SignedPresence | None:
        """The newest record accepted from ``peer_id``."""
        return self._newest.get(peer_id)

    def prune(self) -> None:
        """Forget records that expired (their peers' next records start afresh)."""
        limit = (self.clock() - CLOCK_SKEW) * 1000
        for peer_id in [p for p, r in self._newest.items() if r.expires < limit]:
            del self._newest[peer_id]

    def counters(self) -> dict[str, int]:
        """``accepted`` and every reject reason, for ``p2phost peers`` and tests."""
        return {"accepted": self.accepted, **{r: self.rejected[r] for r in REJECT_REASONS}}

