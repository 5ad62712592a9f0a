"""What a p2phost node puts in its DNS-SD TXT record, and the checks on what others put there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from p2phost_sdk import (
    HOST_API,
    MAX_ADDRESSES,
    AnnouncementError,
    PeerRecord,
    check_announcement,
)

SERVICE_TYPE = "_p2phost._tcp.local."
#: Largest TXT record accepted (RFC 6763 recommends keeping them under 1300 bytes).
MAX_TXT = 2048


def instance_name(peer_id: str) -> str:
    """The DNS-SD service instance of a node: its peer id (52 characters, unique)."""
    return f"{peer_id}.{SERVICE_TYPE}"


def txt_properties(peer_id: str, scope: str, addresses: Sequence[str]) -> dict[str, str]:
    """The TXT key/value pairs a node announces."""
    props = {"id": peer_id, "api": str(HOST_API), "scope": scope}
    for index, address in enumerate(addresses[:MAX_ADDRESSES]):
        props[f"addr{index}"] = address
    return props


def _text(value: bytes | None, key: str) -> str:
    if value is None:
        raise AnnouncementError(f"TXT key {key!r} has no value")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnnouncementError(f"TXT key {key!r} is not UTF-8") from exc


def parse_service(
    name: str,
    text: bytes,
    properties: Mapping[bytes, bytes | None],
    hosts: Sequence[str],
    *,
    source: str,
) -> tuple[str, PeerRecord]:
    """The scope and record a resolved service announces; AnnouncementError when malformed.

    ``hosts`` are the service's IP addresses (they replace wildcard listen addresses).
    """
    if len(text) > MAX_TXT:
        raise AnnouncementError(f"TXT record of {len(text)} bytes (at most {MAX_TXT})")
    if b"id" not in properties or b"scope" not in properties:
        raise AnnouncementError("TXT record without 'id' and 'scope'")
    peer_id = _text(properties[b"id"], "id")
    scope = _text(properties[b"scope"], "scope")
    if name.lower() != instance_name(peer_id).lower():
        raise AnnouncementError(f"service {name!r} does not carry its own peer id")
    addresses = [_text(properties.get(f"addr{i}".encode()), f"addr{i}")
                 for i in range(MAX_ADDRESSES + 1) if f"addr{i}".encode() in properties]
    return scope, check_announcement(peer_id, addresses, source=source, hosts=hosts)
