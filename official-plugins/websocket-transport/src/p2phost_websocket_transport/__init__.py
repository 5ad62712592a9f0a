"""WebSocket transport for p2phost: one binary message per frame, ws://HOST:PORT/PATH."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._address import WsAddress
from ._transport import SUBPROTOCOL, WebSocketConnection, WebSocketListener, WebSocketTransport

__all__ = [
    "SUBPROTOCOL",
    "WebSocketConnection",
    "WebSocketListener",
    "WebSocketTransport",
    "WsAddress",
    "p2phost_transports",
]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The WebSocket transport, configured from ``[config.websocket-transport]``."""
    config = context.config
    return [
        WebSocketTransport(
            max_frame_size=context.max_frame_size,
            max_queue=int(config.get("max-queue", 16)),
            proxy=str(config.get("proxy", "env")),
            origins=[str(o) for o in config.get("origins", [])],
            handshake_timeout=float(config.get("handshake-timeout", 10.0)),
        )
    ]
