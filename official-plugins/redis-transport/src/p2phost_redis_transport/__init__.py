"""Redis Streams transport for p2phost: ``redis://HOST:PORT/DB``, an inbox stream per node."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._medium import RedisMedium, RedisTransport, inbox_key

__all__ = ["RedisMedium", "RedisTransport", "inbox_key", "p2phost_transports"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The Redis transport, configured from ``[config.redis-transport]``."""
    return [RedisTransport.from_context(context)]
