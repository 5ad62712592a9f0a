"""Connections as rows (transport, security, outbox) and handshake failures as a short
reason: what the metrics label them with and ``p2phost top`` lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p2phost_sdk import HandshakeError

from .._runtime.wire._channel import Channel

#: Words of a handshake failure's message -> its reason label (first match wins).
_REASONS = (
    ("did not finish within", "timeout"),
    ("trust policy", "untrusted"),
    ("host-api", "host-api"),
    ("peer limit", "peer-limit"),
    ("shutting down", "shutting-down"),
    ("refused the connection", "refused-by-peer"),
    ("hello", "bad-hello"),
    ("expected peer", "wrong-peer"),
    ("connected to itself", "self"),
    ("codec", "no-common-codec"),
)


def handshake_reason(exc: BaseException) -> str:
    """A small, fixed set of labels for why a handshake failed."""
    text = str(exc)
    for words, reason in _REASONS:
        if words in text:
            return reason
    if isinstance(exc, HandshakeError) and exc.__cause__ is not None:
        return "security"
    return "other"


def link_rows(channels: Iterable[Channel]) -> list[dict[str, Any]]:
    """One row per open connection to a peer."""
    rows = []
    for channel in channels:
        if channel.ended:
            continue
        scheme = channel.address.split("://", 1)[0] if "://" in channel.address else ""
        rows.append({"peer_id": channel.peer_id, "address": channel.address,
                     "transport": scheme, "security": channel.info.security or "none",
                     "codec": channel.codec.content_type,
                     "rtt_ms": None if channel.rtt is None else round(channel.rtt * 1000, 3)})
    return rows
