"""NATS transport for p2phost: ``nats://HOST:PORT``, a subject per node inbox (JetStream
streams when ``durable = true``)."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._medium import NatsMedium, NatsTransport
from ._streams import inbox_stream, inbox_subject

__all__ = ["NatsMedium", "NatsTransport", "inbox_stream", "inbox_subject", "p2phost_transports"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The NATS transport, configured from ``[config.nats-transport]``."""
    return [NatsTransport.from_context(context,
                                       durable=bool(context.config.get("durable", False)))]
