"""What a p2phost node puts in its DNS-SD TXT record, and the checks on what others put there.

The TXT record is a signed presence record (``p2phost_sdk.SignedPresence``) spelled as
DNS-SD keys, readable by any DNS-SD tool: ``id``, ``api``, ``scope``, ``addr0``...,
``seq`` and ``exp`` (milliseconds since the epoch) and ``sig`` (base64 Ed25519 signature).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from p2phost_sdk import (
    HOST_API,
    MAX_ADDRESSES,
    AnnouncementError,
    PeerRecord,
    SignedPresence,
    check_announcement,
    is_peer_id,
)

SERVICE_TYPE = "_p2phost._tcp.local."
#: Largest TXT record accepted (RFC 6763 recommends keeping them under 1300 bytes).
MAX_TXT = 2048


def instance_name(peer_id: str) -> str:
    """The DNS-SD service instance of a node: its peer id (52 characters, unique)."""
    return f"{peer_id}.{SERVICE_TYPE}"


def txt_properties(record: SignedPresence) -> dict[str, str]:
    """The TXT key/value pairs a node announces: its signed presence record."""
    props = {"id": record.peer_id, "api": str(HOST_API), "scope": record.scope}
    for index, address in enumerate(record.addresses[:MAX_ADDRESSES]):
        props[f"addr{index}"] = address
    props["seq"] = str(record.sequence)
    props["exp"] = str(record.expires)
    props["sig"] = base64.b64encode(record.signature).decode()
    return props


def txt_items(text: bytes) -> dict[bytes, bytes | None]:
    """The key/value pairs of a TXT record's wire form (RFC 6763 section 6: strings of
    ``key=value``, each behind its length; the first of a key counts)."""
    items: dict[bytes, bytes | None] = {}
    offset = 0
    while offset < len(text):
        item = text[offset + 1 : offset + 1 + text[offset]]
        offset += 1 + text[offset]
        key, equals, value = item.partition(b"=")
        if key and key not in items:
            items[key] = value if equals else None
    return items


def _text(value: bytes | None, key: str) -> str:
    if value is None:
        raise AnnouncementError(f"TXT key {key!r} has no value")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnnouncementError(f"TXT key {key!r} is not UTF-8") from exc


def _number(properties: Mapping[bytes, bytes | None], key: str) -> int:
    text = _text(properties.get(key.encode()), key)
    if not text.isdigit() or len(text) > 19:
        raise AnnouncementError(f"TXT key {key!r} is not a number")
    return int(text)


def parse_presence(name: str, text: bytes,
                   properties: Mapping[bytes, bytes | None]) -> SignedPresence:
    """The signed record a resolved service carries, NOT yet verified (the scope is the
    one it claims); AnnouncementError when malformed."""
    if len(text) > MAX_TXT:
        raise AnnouncementError(f"TXT record of {len(text)} bytes (at most {MAX_TXT})")
    if b"id" not in properties or b"scope" not in properties:
        raise AnnouncementError("TXT record without 'id' and 'scope'")
    peer_id = _text(properties[b"id"], "id")
    scope = _text(properties[b"scope"], "scope")
    if not is_peer_id(peer_id) or name.lower() != instance_name(peer_id).lower():
        raise AnnouncementError(f"service {name!r} does not carry its own peer id")
    addresses = [_text(properties.get(f"addr{i}".encode()), f"addr{i}")
                 for i in range(MAX_ADDRESSES + 1) if f"addr{i}".encode() in properties]
    if len(addresses) > MAX_ADDRESSES:
        raise AnnouncementError(f"more than {MAX_ADDRESSES} addresses")
    try:
        signature = base64.b64decode(_text(properties.get(b"sig"), "sig"), validate=True)
    except binascii.Error as exc:
        raise AnnouncementError("bad signature: TXT key 'sig' is not base64") from exc
    return SignedPresence(peer_id, scope, tuple(addresses), _number(properties, "seq"),
                          _number(properties, "exp"), False, signature)


def to_record(presence: SignedPresence, hosts: Sequence[str], *, source: str) -> PeerRecord:
    """The peer record of a verified presence (``hosts`` replace wildcard addresses)."""
    return check_announcement(presence.peer_id, list(presence.addresses), source=source,
                              hosts=hosts)


def parse_service(
    name: str,
    text: bytes,
    properties: Mapping[bytes, bytes | None],
    hosts: Sequence[str],
    *,
    source: str,
) -> tuple[str, PeerRecord]:
    """The scope and record a resolved service announces, its signature checked;
    AnnouncementError when malformed or forged."""
    presence = parse_presence(name, text, properties).check()
    return presence.scope, to_record(presence, hosts, source=source)
