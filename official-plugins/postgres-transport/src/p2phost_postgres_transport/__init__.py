"""PostgreSQL transport for p2phost: ``postgresql://USER@HOST:PORT/DATABASE``, a queue
table of node inboxes."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._guards import Deadline
from ._inboxes import notify_channel
from ._medium import PostgresMedium, PostgresTransport

__all__ = ["Deadline", "PostgresMedium", "PostgresTransport", "notify_channel",
           "p2phost_transports"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The PostgreSQL transport, configured from ``[config.postgres-transport]``."""
    return [PostgresTransport.from_context(
        context, deadline=Deadline.from_config(context.config, context.name))]
