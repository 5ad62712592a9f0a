"""The beacon datagram: compact, versioned, and checked field by field before use.

Layout (all integers big-endian)::

    "P2PB"            4 bytes   magic
    version           1 byte    1
    flags             1 byte    bit 0: goodbye (the sender is leaving)
    scope tag         8 bytes   BLAKE2b-64 of the scope name
    public key       32 bytes   the sender's Ed25519 key (its peer id, raw)
    count             1 byte    number of addresses
    count x (length 1 byte, UTF-8 address)

Beacons are not signed (a discovery plugin holds no key); a forged one can at most make a
node dial an address whose handshake then fails to prove the announced peer id.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from p2phost_sdk import (
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    AnnouncementError,
    peer_id_from_public_key,
    public_key_from_peer_id,
)

MAGIC = b"P2PB"
VERSION = 1
FLAG_GOODBYE = 0x01
#: Largest beacon sent or accepted: fits one Ethernet frame without fragmenting.
MAX_BEACON = 1400

_HEADER = struct.Struct("!4sBB8s32sB")


def scope_tag(scope: str) -> bytes:
    """The 8-byte tag of a scope name carried in every beacon."""
    return hashlib.blake2b(scope.encode(), digest_size=8).digest()


@dataclass(frozen=True)
class Beacon:
    """One decoded beacon (addresses not yet checked: see ``check_announcement``)."""

    scope_tag: bytes
    peer_id: str
    addresses: tuple[str, ...]
    goodbye: bool = False


def encode(beacon: Beacon) -> bytes:
    """The datagram for ``beacon``; addresses that do not fit are left out."""
    out = bytearray(_HEADER.size)
    count = 0
    for address in beacon.addresses[:MAX_ADDRESSES]:
        raw = address.encode()
        if len(raw) > MAX_ADDRESS_LENGTH or len(out) + 1 + len(raw) > MAX_BEACON:
            continue
        out += bytes([len(raw)]) + raw
        count += 1
    _HEADER.pack_into(out, 0, MAGIC, VERSION, FLAG_GOODBYE if beacon.goodbye else 0,
                      beacon.scope_tag, public_key_from_peer_id(beacon.peer_id), count)
    return bytes(out)


def decode(data: bytes) -> Beacon:
    """Parse a datagram; :class:`AnnouncementError` says why it is not a valid beacon."""
    if len(data) > MAX_BEACON:
        raise AnnouncementError(f"beacon of {len(data)} bytes (at most {MAX_BEACON})")
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise AnnouncementError("not a p2phost beacon (bad magic or too short)")
    _, version, flags, tag, key, count = _HEADER.unpack_from(data)
    if version != VERSION:
        raise AnnouncementError(f"beacon version {version} (this plugin speaks {VERSION})")
    if count > MAX_ADDRESSES:
        raise AnnouncementError(f"{count} addresses (at most {MAX_ADDRESSES})")
    addresses: list[str] = []
    offset = _HEADER.size
    for _ in range(count):
        if offset >= len(data):
            raise AnnouncementError("beacon truncated inside its addresses")
        length = data[offset]
        raw = data[offset + 1:offset + 1 + length]
        if len(raw) != length:
            raise AnnouncementError("beacon truncated inside an address")
        try:
            addresses.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise AnnouncementError("an address is not UTF-8") from exc
        offset += 1 + length
    if offset != len(data):
        raise AnnouncementError(f"{len(data) - offset} stray bytes after the addresses")
    return Beacon(tag, peer_id_from_public_key(key), tuple(addresses),
                  goodbye=bool(flags & FLAG_GOODBYE))
