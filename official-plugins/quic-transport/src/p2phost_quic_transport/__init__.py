"""QUIC transport for p2phost (aioquic): frames on one stream of a QUIC connection."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._connection import PREAMBLE, QuicStreamConnection
from ._transport import (
    ALPN,
    MAX_PENDING,
    QuicListener,
    QuicTransport,
    format_address,
    parse_address,
)

__all__ = [
    "ALPN",
    "MAX_PENDING",
    "PREAMBLE",
    "QuicListener",
    "QuicStreamConnection",
    "QuicTransport",
    "format_address",
    "p2phost_transports",
    "parse_address",
]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The QUIC transport, configured from ``[config.quic-transport]``."""
    config = context.config
    return [
        QuicTransport(
            max_frame_size=context.max_frame_size,
            window=int(config.get("window", 1048576)),
            idle_timeout=float(config.get("idle-timeout", 60.0)),
            handshake_timeout=float(config.get("handshake-timeout", 10.0)),
            max_datagram_size=int(config.get("max-datagram-size", 1200)),
            congestion_control=str(config.get("congestion-control", "reno")),
        )
    ]
