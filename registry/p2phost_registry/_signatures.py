"""Publisher signatures at upload: check each p2phost signature, hold each owner to one key.

An upload may carry a p2phost signature document (see :mod:`p2phost_sdk.signing`): it must
name the uploaded file and its sha256 and verify with its key, or the upload is refused whole.
The first signed upload of an owner records that owner's publisher key; later signed uploads
must use it until the owner registers another (``POST /api/v1/publisher-key``). A signature
in another format (twine's ``gpg_signature``) is stored and served as before, unchecked.
"""

from __future__ import annotations

from p2phost_sdk.signing import (
    PluginSignature,
    SignatureFormatError,
    key_proof_message,
    parse_publisher_key,
    verify_with_key,
)

from ._db import Tx, now_iso
from ._errors import BadRequest, PublisherKeyMismatch
from ._validate import Inspected

_RESIGN = "sign it again: p2phost plugin publish FILE --sign --key KEYFILE"


def check_signature(data: bytes | None, info: Inspected) -> PluginSignature | None:
    """The upload's verified p2phost signature; None when unsigned or signed another way."""
    if data is None:
        return None
    try:
        signature = PluginSignature.parse(data)
    except SignatureFormatError as exc:
        raise BadRequest(f"{info.filename}: the signature is malformed: {exc}; {_RESIGN}"
                         ) from exc
    if signature is None:
        return None
    if (signature.filename, signature.sha256) != (info.filename, info.sha256):
        raise BadRequest(
            f"{info.filename}: the signature is for {signature.filename} with sha256 "
            f"{signature.sha256}, not for this file (sha256 {info.sha256}); {_RESIGN}")
    if not signature.verifies():
        raise BadRequest(f"{info.filename}: the signature does not verify with "
                         f"{signature.publisher_key}; {_RESIGN}")
    return signature


def current_key(tx: Tx, owner: str) -> str | None:
    """The publisher key ``owner`` signs with, if it ever signed."""
    row = tx.one("SELECT publisher_key FROM publisher_keys WHERE owner = ?", (owner,))
    return None if row is None else str(row[0])


def hold_to_key(tx: Tx, owner: str, key: str) -> bool:
    """Check a signed upload of ``owner`` uses its key; True when ``key`` is its first."""
    current = current_key(tx, owner)
    if current is None:
        _set_key(tx, owner, key, None)
        return True
    if current != key:
        raise PublisherKeyMismatch(
            f"this file is signed by {key}, but the publisher key of {owner} on this registry "
            f"is {current}. If you replaced your key, register the new one first with a "
            f"token of {owner} that has no --scope: p2phost key register --key NEW_KEYFILE "
            "--registry URL --token TOKEN (users who pinned the old key must then accept the "
            "change with --trust-new-key); otherwise sign with your registered key")
    return False


def register_key(tx: Tx, owner: str, key: str, proof: bytes) -> str | None:
    """Make ``key`` the publisher key of ``owner``; the key it replaces, if any."""
    try:
        parse_publisher_key(key)
    except SignatureFormatError as exc:
        raise BadRequest(f"{exc}; print yours with `p2phost key show`") from exc
    if not verify_with_key(key, proof, key_proof_message(key)):
        raise BadRequest(f"the proof does not verify with {key}: only the holder of a key may "
                         "register it (p2phost key register signs the proof)")
    previous = current_key(tx, owner)
    if previous != key:
        _set_key(tx, owner, key, previous)
    return previous


def _set_key(tx: Tx, owner: str, key: str, previous: str | None) -> None:
    if previous is None:
        tx.run("INSERT INTO publisher_keys (owner, publisher_key, added) VALUES (?, ?, ?)",
               (owner, key, now_iso()))
    else:
        tx.run("UPDATE publisher_keys SET publisher_key = ?, added = ? WHERE owner = ?",
               (key, now_iso(), owner))
