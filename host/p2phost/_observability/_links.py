"""Connections as rows (transport, security, outbox) and handshake failures as a short
reason: what the metrics label them with and ``p2phost top`` lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p2phost_sdk import HandshakeError

from .._runtime._errors import Refused, refusal_of, untrusted
from .._runtime.wire._channel import Channel
from .._schemes import scheme_of

#: Words of a handshake failure's message -> its reason label (first match wins); a
#: peer's refusal for another reason is looked up in the first three only (its shutdown,
#: its timeout, our host-api: the wire gives them as words), else ``refused-by-peer``.
_REASONS = (
    ("did not finish within", "timeout"),
    ("host-api", "host-api"),
    ("shutting down", "shutting-down"),
    ("hello", "bad-hello"),
    ("expected peer", "wrong-peer"),
    ("connected to itself", "self"),
    ("codec", "no-common-codec"),
)
_PEERS_REASONS = _REASONS[:3]


def handshake_reason(exc: BaseException) -> str:
    """A small, fixed set of labels for why a handshake failed."""
    if untrusted(exc):  # this node's trust policy, or the peer's
        return "untrusted"
    if isinstance(exc, Refused):
        return "peer-limit"
    by_peer = refusal_of(exc)
    if by_peer is not None:
        if by_peer.code == "peer-limit":
            return "peer-limit"
        return next((label for words, label in _PEERS_REASONS if words in by_peer.reason),
                    "refused-by-peer")
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
        rows.append({"peer_id": channel.peer_id, "address": channel.address,
                     "transport": scheme_of(channel.address),
                     "security": channel.info.security or "none",
                     "codec": channel.codec.content_type,
                     "rtt_ms": None if channel.rtt is None else round(channel.rtt * 1000, 3)})
    return rows
