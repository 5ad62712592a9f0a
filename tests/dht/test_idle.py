"""dht-discovery in real nodes (memory transport, Noise): the connections the DHT dials for
lookups are closed once idle, and the routing table's liveness checks still work after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import Identity
from p2phost_sdk.testing.discovery import wait_until
from tests.dht.network import MemoryNetwork  # noqa: F401 - puts the plugin on sys.path
from tests.discovery.plugins import started_nodes, use_plugin_source

for _name in ("memory-transport", "json-codec", "noise-security"):
    use_plugin_source(_name)

from p2phost_dht_discovery import DhtService  # noqa: E402
from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402


@asynccontextmanager
async def dht_nodes() -> AsyncIterator[Callable[..., Any]]:
    """``await make(config)``: a started node running dht-discovery, and its service."""
    memory = MemoryTransport()

    async def make(config: dict[str, Any]) -> tuple[Node, DhtService]:
        identity = Identity.generate()
        service = DhtService("dht-discovery", {"lookup-interval": 0.2, **config})
        name = f"mem://dht-idle-{uuid.uuid4().hex[:10]}"
        node = Node(identity, transports={"mem": memory},
                    codecs={"application/json": JsonCodec()}, security=[NoiseSecurity()],
                    apps=[service.app], discovery=[service.discovery],
                    options=NodeOptions(name=name, listen=(name,), drain_timeout=2.0))
        await start(node)
        return node, service

    async with started_nodes() as start:
        yield make


def connected(node: Node) -> set[str]:
    return {p.peer_id for p in node.peers()}


async def test_idle_lookup_connections_close_and_the_table_stays_live() -> None:
    async with dht_nodes() as make:
        boot, _ = await make({"idle-timeout": 0})  # the bootstrap node closes nothing
        config = {"bootstrap": [boot.addresses[0]], "idle-timeout": 0.6}
        members = [await make(config) for _ in range(5)]
        node, service = members[0]
        assert service.dht is not None
        others = {n.peer_id for n, _ in members[1:]}
        await wait_until(lambda: others <= set(service.dht.table._live), 20,
                         "every member in the first member's routing table")
        # Lookups dialled members; with no DHT traffic, every such connection closes.
        # (The bootstrap node keeps none it did not dial; the members closed theirs.)
        await wait_until(lambda: not any(connected(n) for n, _ in members), 20,
                         "every DHT connection closed once idle")
        closed = sum(s.dht.counters["idle connections closed"]  # type: ignore[union-attr]
                     for _, s in members)
        assert closed >= len(members)
        # The table still holds every member: closing is not failing. A refresh pings
        # them all, dialling again, and evicts nobody.
        assert others <= set(service.dht.table._live)
        await service.dht.refresh()
        assert others <= set(service.dht.table._live)
        assert service.dht.counters["requests failed"] == 0
        assert service.dht.table.counters["evicted"] == 0
        assert others <= connected(node)  # the pings dialled them again ...
        await wait_until(lambda: not connected(node) & others, 20,
                         "the refresh's connections closed again")  # ... and idle, closed


async def test_a_peer_discovery_reported_stays_connected() -> None:
    async with dht_nodes() as make:
        boot, _ = await make({"idle-timeout": 0})
        target, _ = await make({"bootstrap": [boot.addresses[0]], "idle-timeout": 0})
        node, _ = await make({"bootstrap": [boot.addresses[0]], "idle-timeout": 0.4,
                              "find": [target.peer_id]})
        await wait_until(lambda: target.peer_id in connected(node), 20,
                         "the peer of `find` connected")
        await asyncio.sleep(1.5)  # several idle timeouts: the node keeps what it reported
        assert target.peer_id in connected(node)
