"""Publisher signatures of plugin files: what :mod:`p2phost_sdk.signing` exports (its
docstring describes the format)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import SignatureFormatError
from ._peer_ids import peer_id_from_public_key

if TYPE_CHECKING:
    from ._identity import Identity

#: The format name inside every signature document, and the signing domain.
FORMAT = "p2phost-plugin-signature-v1"
#: Signatures over this prefix prove possession of a publisher key when registering it.
KEY_PROOF_DOMAIN = b"p2phost-publisher-key-v1\n"
#: A signature document is a few hundred bytes; anything much larger is not one.
MAX_SIGNATURE_SIZE = 4096
_KEY_PREFIX = "ed25519:"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def format_publisher_key(public_key: bytes) -> str:
    """``ed25519:BASE64`` for a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise SignatureFormatError("an Ed25519 public key is 32 bytes")
    return _KEY_PREFIX + base64.b64encode(public_key).decode()


def parse_publisher_key(text: str) -> bytes:
    """The raw public key of ``ed25519:BASE64``; :class:`SignatureFormatError` otherwise."""
    if not isinstance(text, str) or not text.startswith(_KEY_PREFIX):
        raise SignatureFormatError(f"{text!r} is not a publisher key (ed25519:BASE64)")
    raw = _b64(text.removeprefix(_KEY_PREFIX), "publisher key")
    if len(raw) != 32:
        raise SignatureFormatError(f"{text!r} is not a publisher key: not 32 bytes")
    return raw


def signed_message(filename: str, sha256: str) -> bytes:
    """The exact bytes a publisher signs for one file."""
    return FORMAT.encode() + b"\n" + filename.encode() + b"\n" + sha256.lower().encode()


def key_proof_message(publisher_key: str) -> bytes:
    """What a key holder signs to prove it holds ``publisher_key`` when registering it."""
    return KEY_PROOF_DOMAIN + publisher_key.encode()


def verify_with_key(publisher_key: str, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` over ``data`` was made by ``publisher_key`` (False if malformed)."""
    try:
        peer_id = peer_id_from_public_key(parse_publisher_key(publisher_key))
    except SignatureFormatError:
        return False
    from ._identity import verify  # the crypto libraries: only once there is a signature

    return verify(peer_id, signature, data)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureFormatError(f"the {what} is not valid base64") from exc


@dataclass(frozen=True)
class PluginSignature:
    """One file's signature document: the file, its sha256, the key, the signature (base64)."""

    filename: str
    sha256: str
    publisher_key: str
    signature: str

    @classmethod
    def create(cls, identity: Identity, filename: str, sha256: str) -> PluginSignature:
        """Sign ``filename`` whose content hashes to ``sha256`` with ``identity``."""
        raw = identity.sign(signed_message(filename, sha256))
        return cls(filename, sha256.lower(), format_publisher_key(identity.public_key),
                   base64.b64encode(raw).decode())

    @classmethod
    def parse(cls, data: bytes) -> PluginSignature | None:
        """The document in ``data``; None if ``data`` is not one at all (a GPG signature).

        Raises :class:`SignatureFormatError` when ``data`` claims to be a p2phost signature
        but is malformed, so that a broken signature is never mistaken for a foreign one.
        """
        try:
            doc: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or "format" not in doc:
            return None
        if doc["format"] != FORMAT:
            raise SignatureFormatError(f"unknown signature format {doc['format']!r} "
                                       f"(this p2phost reads {FORMAT})")
        names = ("filename", "sha256", "publisher_key", "signature")
        missing = [k for k in names if not isinstance(doc.get(k), str) or not doc[k]]
        if missing:
            raise SignatureFormatError(f"the signature document lacks {', '.join(missing)}")
        fields: dict[str, str] = {k: doc[k] for k in names}
        parse_publisher_key(fields["publisher_key"])
        if not _SHA256.match(fields["sha256"]):
            raise SignatureFormatError("the signature's sha256 is not 64 lowercase hex digits")
        if len(_b64(fields["signature"], "signature")) != 64:
            raise SignatureFormatError("the signature is not 64 bytes")
        return cls(**fields)

    def to_bytes(self) -> bytes:
        """The document as served beside the file (``FILE.sig``)."""
        doc = {"format": FORMAT, "filename": self.filename, "sha256": self.sha256,
               "publisher_key": self.publisher_key, "signature": self.signature}
        return json.dumps(doc, indent=1).encode() + b"\n"

    @property
    def raw_signature(self) -> bytes:
        """The 64-byte Ed25519 signature."""
        return _b64(self.signature, "signature")

    def verifies(self) -> bool:
        """Whether the signature is the key's over this filename and sha256."""
        return verify_with_key(self.publisher_key, self.raw_signature,
                               signed_message(self.filename, self.sha256))
