"""Kademlia DHT discovery for p2phost: find any peer by id, and who provides a topic."""

from __future__ import annotations

from ._dht import Dht, DhtError, DhtSettings, Rpc
from ._keys import peer_key, topic_key
from ._lookup import LookupResult
from ._records import PEER_SCOPE, RecordGate, decode, encode, provider_scope
from ._routing import RoutingTable, TableLimits

__all__ = [
    "PEER_SCOPE",
    "Dht",
    "DhtError",
    "DhtSettings",
    "LookupResult",
    "RecordGate",
    "RoutingTable",
    "Rpc",
    "TableLimits",
    "decode",
    "encode",
    "peer_key",
    "provider_scope",
    "topic_key",
]
