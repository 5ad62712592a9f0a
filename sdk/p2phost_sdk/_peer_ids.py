"""Peer ids: the text form of an Ed25519 public key, checked without the crypto libraries.

Apart from :mod:`._identity` (which signs and verifies, and imports ``cryptography``), so that
reading a manifest or a known-peers file does not load them.
"""

from __future__ import annotations

import base64
import functools


def peer_id_from_public_key(public_key: bytes) -> str:
    """The peer id of a raw 32-byte Ed25519 public key: lowercase base32, no padding.

    The id *is* the key, so anyone holding a peer id can verify that peer's
    signatures and encrypt to it without another look-up.
    """
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return base64.b32encode(public_key).decode().rstrip("=").lower()


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The raw public key inside a peer id; ValueError if it is not a peer id."""
    try:
        raw = base64.b32decode(peer_id.upper() + "====", casefold=False)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a peer id: {peer_id!r}") from exc
    if len(raw) != 32 or peer_id_from_public_key(raw) != peer_id:
        raise ValueError(f"not a peer id: {peer_id!r}")
    return raw


@functools.lru_cache(maxsize=4096)
def is_peer_id(text: str) -> bool:
    """Whether ``text`` is a well-formed peer id (cached: inbox media check the sender
    of every record, and the same few peers send them all)."""
    try:
        public_key_from_peer_id(text)
    except ValueError:
        return False
    return True
