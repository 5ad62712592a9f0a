"""Many DHT nodes in one process: an in-memory Rpc that calls the other node's handler.

Requests go through a JSON round trip (what the json codec would do), so nothing is
shared between nodes but bytes-equivalent data; a killed node raises like a closed
connection.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2phost_sdk import Identity, PeerUnavailable, PresenceSigner, SignedPresence

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "official-plugins" /
                       "dht-discovery" / "src"))

from p2phost_dht_discovery import Dht, DhtSettings


class MemoryNetwork:
    """Nodes by peer id; ``call`` delivers a request to a live node's ``handle``."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.nodes: dict[str, Dht] = {}
        self.dead: set[str] = set()
        self.latency = latency
        self.requests = 0

    def rpc(self, sender: str) -> MemoryRpc:
        """The Rpc of the node ``sender``."""
        return MemoryRpc(self, sender)

    def add(self, identity: Identity | None = None, *, address: str | None = None,
            settings: DhtSettings | None = None) -> Dht:
        """A new DHT node on this network (not joined yet)."""
        identity = identity or Identity.generate()
        signer = PresenceSigner(identity)
        index = len(self.nodes)
        # Each node in its own /24, as on the Internet: the prefix caps do not bite.
        # Long timeouts: a dead node fails at once here, and a loaded CI machine may pause
        # this process for seconds (timeouts are the plugin tests' and benchmark's matter).
        address = address or f"tcp://10.{index // 250}.{index % 250}.1:4001"

        def sign(scope: str, addresses: Sequence[str], lifetime: float) -> SignedPresence:
            return signer.sign(scope, addresses, lifetime=lifetime)

        node = Dht(identity.peer_id, sign, self.rpc(identity.peer_id),
                   settings or DhtSettings(request_timeout=30.0, lookup_timeout=120.0),
                   addresses=[address])
        self.nodes[identity.peer_id] = node
        return node

    def kill(self, peer_id: str) -> None:
        """The node stops answering (its process died)."""
        self.dead.add(peer_id)

    def alive(self) -> list[Dht]:
        """The nodes not killed."""
        return [n for p, n in self.nodes.items() if p not in self.dead]


class MemoryRpc:
    """One node's way out onto a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, sender: str) -> None:
        self.network, self.sender = network, sender

    async def call(self, peer_id: str, addresses: Sequence[str],
                   request: dict[str, Any]) -> dict[str, Any]:
        """Deliver ``request`` to ``peer_id``'s handler and return its reply."""
        self.network.requests += 1
        if self.network.latency:
            await asyncio.sleep(self.network.latency)
        else:
            await asyncio.sleep(0)
        node = self.network.nodes.get(peer_id)
        if node is None or peer_id in self.network.dead or self.sender in self.network.dead:
            raise PeerUnavailable(f"{peer_id} is unreachable")
        reply = await node.handle(self.sender, json.loads(json.dumps(request)))
        result: dict[str, Any] = json.loads(json.dumps(reply))
        return result


async def build(size: int, *, seed: int = 1, network: MemoryNetwork | None = None,
                settings: DhtSettings | None = None) -> tuple[MemoryNetwork, list[Dht]]:
    """``size`` nodes joined through the first one (the only bootstrap peer)."""
    random.seed(seed)
    network = network or MemoryNetwork()
    nodes = [network.add(settings=settings) for _ in range(size)]
    bootstrap = nodes[0]
    for node in nodes[1:]:
        await node.join([(bootstrap.peer_id, bootstrap.addresses)])
    return network, nodes
