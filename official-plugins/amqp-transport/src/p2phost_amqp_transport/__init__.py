"""AMQP transport for p2phost: ``amqp://USER:PASSWORD@HOST:PORT/VHOST``, a durable queue
per node inbox (RabbitMQ)."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._medium import AmqpMedium, AmqpTransport
from ._queues import inbox_queue

__all__ = ["AmqpMedium", "AmqpTransport", "inbox_queue", "p2phost_transports"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The AMQP transport, configured from ``[config.amqp-transport]``."""
    return [AmqpTransport.from_context(context)]
