"""Kademlia keys: where peer ids and topics sit in the 256-bit XOR space.

A key is the SHA-256 of the peer id (or of the topic), so an attacker cannot choose an id
near a victim's key without grinding keys, and every peer id maps evenly onto the space.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

#: Bits in a key, and so the number of buckets.
KEY_BITS = 256


@functools.lru_cache(maxsize=65536)
def peer_key(peer_id: str) -> int:
    """The key of ``peer_id``."""
    return int.from_bytes(hashlib.sha256(b"p2phost dht peer\x00" + peer_id.encode()).digest())


def topic_key(topic: str) -> int:
    """The key under which providers of ``topic`` are stored."""
    return int.from_bytes(hashlib.sha256(b"p2phost dht topic\x00" + topic.encode()).digest())


def key_hex(key: int) -> str:
    """A key as 64 hex digits (how it travels)."""
    return f"{key:064x}"


def parse_key(text: object) -> int:
    """A key from the wire; ValueError when it is not 64 hex digits."""
    if not isinstance(text, str) or len(text) != 64:
        raise ValueError("a key is 64 hex digits")
    return int(text, 16)


def bucket_index(own: int, other: int) -> int:
    """Which bucket ``other`` falls in: the length of the prefix it shares with ``own``."""
    distance = own ^ other
    return KEY_BITS - distance.bit_length()


#: How many of a record's addresses a node dials, in order, to reach its peer.
DIALLED = 4


def networks(addresses: Sequence[str]) -> tuple[str, ...]:
    """The networks ``addresses`` are in (IPv4 /24, IPv6 /48), each once: the unit of the
    flooding caps. Loopback is left out (one machine: nothing to spread over); a host
    name is its own network; no address at all is the network ""."""
    if not addresses:
        return ("",)
    return tuple(dict.fromkeys(p for p in map(_prefix, addresses) if p is not None))


@functools.lru_cache(maxsize=4096)
def _prefix(address: str) -> str | None:
    # Cached: every record a table takes is placed by it, and parsing is not cheap.
    try:
        host = urlsplit(address).hostname or ""
    except ValueError:
        return ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    if ip.is_loopback:
        return None
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
