"""The presence entry a node keeps on the broker: a signed record as a small JSON object.

``{"id": PEERID, "api": "1.0", "addresses": [...], "seq": MS, "exp": MS, "sig": BASE64}``,
plus ``"bye": true`` (and no addresses) for a goodbye. The signature (the peer's key, see
``p2phost_sdk.SignedPresence``) covers the scope, so an entry cannot be moved between
scopes, and the goodbye flag, so nobody but the peer can say it left.
"""

from __future__ import annotations

import base64
import binascii
import json

from p2phost_sdk import HOST_API, AnnouncementError, SignedPresence, is_peer_id

#: Largest presence entry accepted, in bytes.
MAX_PRESENCE = 4096


def encode(record: SignedPresence) -> bytes:
    """The presence entry (or goodbye) carrying ``record``."""
    body: dict[str, object] = {"id": record.peer_id, "api": str(HOST_API)}
    if record.goodbye:
        body["bye"] = True
    else:
        body["addresses"] = list(record.addresses)
    body.update(seq=record.sequence, exp=record.expires,
                sig=base64.b64encode(record.signature).decode())
    return json.dumps(body, separators=(",", ":")).encode()


def _integer(body: dict[str, object], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise AnnouncementError(f"presence entry without a valid {key!r}")
    return value


def decode(data: bytes, *, scope: str) -> SignedPresence:
    """The signed record of an entry in ``scope``, NOT yet verified (see
    ``PresenceBook.accept``); :class:`AnnouncementError` says why it is malformed."""
    if len(data) > MAX_PRESENCE:
        raise AnnouncementError(f"presence entry of {len(data)} bytes (at most {MAX_PRESENCE})")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnouncementError(f"presence entry is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AnnouncementError("presence entry is not a JSON object")
    peer_id = body.get("id")
    if not isinstance(peer_id, str) or not is_peer_id(peer_id):
        raise AnnouncementError(f"peer id {str(peer_id)[:80]!r} is not a peer id")
    goodbye = body.get("bye") is True
    addresses = [] if goodbye else body.get("addresses")
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise AnnouncementError("addresses are not a list of text")
    signature = body.get("sig")
    try:
        raw = base64.b64decode(signature if isinstance(signature, str) else "", validate=True)
    except binascii.Error as exc:
        raise AnnouncementError("bad signature: 'sig' is not base64") from exc
    return SignedPresence(peer_id, scope, tuple(addresses), _integer(body, "seq"),
                          _integer(body, "exp"), goodbye, raw)
