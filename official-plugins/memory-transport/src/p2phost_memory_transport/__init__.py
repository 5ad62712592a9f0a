"""In-process transport for p2phost: ``mem://NAME`` listeners inside one Python process."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._transport import MemoryConnection, MemoryTransport

__all__ = ["MemoryConnection", "MemoryTransport", "p2phost_transports"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The memory transport, configured from ``[config.memory-transport]``."""
    return [
        MemoryTransport(
            max_frame_size=context.max_frame_size,
            capacity=int(context.config.get("capacity", 1024)),
        )
    ]
