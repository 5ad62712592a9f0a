"""Node identity: an Ed25519 key pair and the peer id derived from its public key."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ._peer_ids import peer_id_from_public_key, public_key_from_peer_id

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


_PLUGIN_DOMAIN = b"p2phost plugin signature v1\x00"


def plugin_payload(plugin: str, data: bytes) -> bytes:
    """The bytes a plugin's signature over ``data`` covers (``PluginContext.sign``): a
    domain string and the plugin's name first, so it is never mistaken for another
    plugin's signature nor for the node's own (handshakes, presence records).

    Check one with ``verify(peer_id, signature, plugin_payload(plugin, data))``.
    """
    raw = plugin.encode()
    return _PLUGIN_DOMAIN + bytes([len(raw)]) + raw + data


def verify(peer_id: str, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` over ``data`` was made by the key of ``peer_id``."""
    try:
        _verifier(peer_id).verify(signature, data)
    except (ValueError, InvalidSignature):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _verifier(peer_id: str) -> Ed25519PublicKey:
    # Cached: the same few peers sign most of what a node checks (gossip origins, DHT
    # records), and decoding the id and loading the key is an eighth of a verification.
    return Ed25519PublicKey.from_public_bytes(public_key_from_peer_id(peer_id))


@dataclass(frozen=True)
class Identity:
    """A node's Ed25519 key pair. ``peer_id`` names the node everywhere."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a raw 32-byte private key seed."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        """The raw 32-byte private key seed (keep it secret)."""
        return self.private_key.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private_key.public_key().public_bytes(_RAW, _RAW_PUB)

    @property
    def peer_id(self) -> str:
        """This identity's peer id."""
        return peer_id_from_public_key(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data``."""
        return self.private_key.sign(data)
