"""TCP transport for p2phost: length-prefixed frames over asyncio streams."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._connection import TcpConnection
from ._transport import TcpListener, TcpTransport, parse_address

__all__ = ["TcpConnection", "TcpListener", "TcpTransport", "p2phost_transports", "parse_address"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The TCP transport, configured from ``[config.tcp-transport]``."""
    return [
        TcpTransport(
            max_frame_size=context.max_frame_size,
            nodelay=bool(context.config.get("nodelay", True)),
            read_size=int(context.config.get("read-size", 262144)),
            buffer_size=int(context.config.get("buffer-size", 0)),
        )
    ]
