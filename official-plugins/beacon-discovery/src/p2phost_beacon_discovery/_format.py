"""The beacon datagram: compact, versioned, signed, and checked field by field before use.

Layout, version 2 (all integers big-endian)::

    "P2PB"            4 bytes   magic
    version           1 byte    2
    flags             1 byte    bit 0: goodbye (the sender is leaving)
    scope tag         8 bytes   BLAKE2b-64 of the scope name
    public key       32 bytes   the sender's Ed25519 key (its peer id, raw)
    sequence          8 bytes   milliseconds since the epoch when signed (grows)
    expires           8 bytes   milliseconds since the epoch when the record lapses
    count             1 byte    number of addresses
    count x (length 1 byte, UTF-8 address)
    signature        64 bytes   Ed25519 over p2phost_sdk.presence_payload(scope, ...)

The signature covers the scope name (not its tag), the sequence, the expiry, the goodbye
flag and the addresses; a receiver checks it with its own scope name, so a beacon of
another scope, a forged one and a replayed older one are all refused.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from p2phost_sdk import (
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    AnnouncementError,
    SignedPresence,
    peer_id_from_public_key,
    public_key_from_peer_id,
)

MAGIC = b"P2PB"
VERSION = 2
FLAG_GOODBYE = 0x01
#: Largest beacon sent or accepted: fits one Ethernet frame without fragmenting.
MAX_BEACON = 1400

_HEADER = struct.Struct("!4sBB8s32sQQB")
_SIGNATURE = 64


def scope_tag(scope: str) -> bytes:
    """The 8-byte tag of a scope name carried in every beacon."""
    return hashlib.blake2b(scope.encode(), digest_size=8).digest()


@dataclass(frozen=True)
class Beacon:
    """One decoded beacon (signature not yet checked: see :meth:`presence`)."""

    scope_tag: bytes
    peer_id: str
    addresses: tuple[str, ...]
    sequence: int
    expires: int
    signature: bytes
    goodbye: bool = False

    @classmethod
    def of(cls, record: SignedPresence) -> Beacon:
        """The beacon carrying a signed presence record."""
        return cls(scope_tag(record.scope), record.peer_id, record.addresses, record.sequence,
                   record.expires, record.signature, goodbye=record.goodbye)

    def presence(self, scope: str) -> SignedPresence:
        """The signed record this beacon carries, read in ``scope`` (to be checked)."""
        return SignedPresence(self.peer_id, scope, self.addresses, self.sequence, self.expires,
                              self.goodbye, self.signature)


def fits(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The leading addresses that fit one beacon (so what is signed is what is sent)."""
    size, out = _HEADER.size + _SIGNATURE, []
    for address in addresses[:MAX_ADDRESSES]:
        raw = address.encode()
        if len(raw) > MAX_ADDRESS_LENGTH or size + 1 + len(raw) > MAX_BEACON:
            continue
        size += 1 + len(raw)
        out.append(address)
    return tuple(out)


def encode(beacon: Beacon) -> bytes:
    """The datagram for ``beacon``; ValueError if its addresses do not fit (see :func:`fits`)."""
    if fits(beacon.addresses) != beacon.addresses:
        raise ValueError("addresses do not fit one beacon: sign fits(addresses) instead")
    out = bytearray(_HEADER.pack(MAGIC, VERSION, FLAG_GOODBYE if beacon.goodbye else 0,
                                 beacon.scope_tag, public_key_from_peer_id(beacon.peer_id),
                                 beacon.sequence, beacon.expires, len(beacon.addresses)))
    for address in beacon.addresses:
        raw = address.encode()
        out += bytes([len(raw)]) + raw
    return bytes(out + beacon.signature)


def decode(data: bytes) -> Beacon:
    """Parse a datagram; :class:`AnnouncementError` says why it is not a valid beacon."""
    if len(data) > MAX_BEACON:
        raise AnnouncementError(f"beacon of {len(data)} bytes (at most {MAX_BEACON})")
    if len(data) < _HEADER.size + _SIGNATURE or data[:4] != MAGIC:
        raise AnnouncementError("not a p2phost beacon (bad magic or too short)")
    _, version, flags, tag, key, sequence, expires, count = _HEADER.unpack_from(data)
    if version != VERSION:
        raise AnnouncementError(f"beacon version {version} (this plugin speaks {VERSION}, "
                                "signed; upgrade beacon-discovery on the sender)")
    if count > MAX_ADDRESSES:
        raise AnnouncementError(f"{count} addresses (at most {MAX_ADDRESSES})")
    addresses: list[str] = []
    offset, end = _HEADER.size, len(data) - _SIGNATURE
    for _ in range(count):
        if offset >= end:
            raise AnnouncementError("beacon truncated inside its addresses")
        length = data[offset]
        raw = data[offset + 1:offset + 1 + length]
        if len(raw) != length or offset + 1 + length > end:
            raise AnnouncementError("beacon truncated inside an address")
        try:
            addresses.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise AnnouncementError("an address is not UTF-8") from exc
        offset += 1 + length
    if offset != end:
        raise AnnouncementError(f"{end - offset} stray bytes before the signature")
    return Beacon(tag, peer_id_from_public_key(key), tuple(addresses), sequence, expires,
                  data[end:], goodbye=bool(flags & FLAG_GOODBYE))
