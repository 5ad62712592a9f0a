"""The presence entry a node keeps on the broker: a small JSON object, checked on arrival."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from p2phost_sdk import HOST_API, AnnouncementError, PeerRecord, check_announcement, is_peer_id

#: Largest presence entry accepted, in bytes.
MAX_PRESENCE = 4096


@dataclass(frozen=True)
class Presence:
    """One decoded presence entry: a heartbeat, or a goodbye (``bye``) with no record."""

    peer_id: str
    record: PeerRecord | None
    bye: bool = False


def encode(peer_id: str, addresses: Sequence[str], *, bye: bool = False) -> bytes:
    """The presence entry of this node (or its goodbye)."""
    body: dict[str, object] = {"id": peer_id, "api": str(HOST_API)}
    if bye:
        body["bye"] = True
    else:
        body["addresses"] = list(addresses)
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes, *, source: str) -> Presence:
    """Parse an entry; :class:`AnnouncementError` says why it is not a valid one."""
    if len(data) > MAX_PRESENCE:
        raise AnnouncementError(f"presence entry of {len(data)} bytes (at most {MAX_PRESENCE})")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnouncementError(f"presence entry is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AnnouncementError("presence entry is not a JSON object")
    if body.get("bye") is True:
        peer_id = body.get("id")
        if not isinstance(peer_id, str) or not is_peer_id(peer_id):
            raise AnnouncementError(f"goodbye from {str(peer_id)[:80]!r}, not a peer id")
        return Presence(peer_id, None, bye=True)
    record = check_announcement(body.get("id"), body.get("addresses"), source=source)
    return Presence(str(record.peer_id), record)
