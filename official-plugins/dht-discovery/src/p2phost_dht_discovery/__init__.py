"""Kademlia DHT discovery for p2phost: find any peer by id, and who provides a topic."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import App, Discovery, PluginContext, hookimpl

from ._dht import Dht, DhtError, DhtSettings, Rpc
from ._keys import peer_key, topic_key
from ._lookup import LookupResult
from ._plugin import TOPIC, DhtApp, DhtDiscovery, DhtService
from ._records import PEER_SCOPE, RecordGate, decode, encode, provider_scope
from ._routing import RoutingTable, TableLimits

__all__ = [
    "PEER_SCOPE",
    "TOPIC",
    "Dht",
    "DhtApp",
    "DhtDiscovery",
    "DhtError",
    "DhtService",
    "DhtSettings",
    "LookupResult",
    "RecordGate",
    "RoutingTable",
    "Rpc",
    "TableLimits",
    "decode",
    "encode",
    "p2phost_apps",
    "p2phost_discovery",
    "peer_key",
    "provider_scope",
    "topic_key",
]

# The host asks for apps and for discovery separately; both halves of one node's DHT must
# share one service. Keyed by the node's peer id; the second call takes it out again.
_halves: dict[str, DhtService] = {}


def _service(context: PluginContext) -> DhtService:
    service = _halves.pop(context.peer_id, None)
    if service is None:
        service = _halves[context.peer_id] = DhtService(context.name, context.config)
    return service


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The DHT's app half: answers the ``dht`` topic."""
    return [_service(context).app]


@hookimpl
def p2phost_discovery(context: PluginContext) -> Sequence[Discovery]:
    """The DHT's discovery half: joins, looks up, provides, refreshes."""
    return [_service(context).discovery]
