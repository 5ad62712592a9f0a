"""Many gossip routers in one process: an in-memory Wire and a simulated clock.

Frames go through a JSON round trip (what the json codec would do) and are delivered in the
order they were sent, one at a time; heartbeats advance the shared clock. A killed node
drops everything sent to it and its neighbours are told it left, as a closed connection
would tell them.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter, deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "official-plugins" /
                       "gossip" / "src"))

from p2phost_gossip import GossipMessage, GossipSettings, Router


class Clock:
    """Simulated seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryWire:
    """One router's way out onto a :class:`GossipNetwork`."""

    def __init__(self, network: GossipNetwork, sender: str) -> None:
        self.network, self.sender = network, sender

    def send(self, peer_id: str, frame: dict[str, Any]) -> None:
        """Queue ``frame`` for ``peer_id`` if the two are connected."""
        if peer_id in self.network.connections.get(self.sender, ()):
            self.network.queue.append((self.sender, peer_id, json.dumps(frame)))


class GossipNetwork:
    """Routers by peer id, who is connected to whom, and the frames in flight."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.routers: dict[str, Router] = {}
        self.connections: dict[str, set[str]] = {}
        self.queue: deque[tuple[str, str, str]] = deque()
        self.dead: set[str] = set()
        #: Per node, the ids delivered to it; per node, "msg" frames it received.
        self.delivered: dict[str, set[str]] = {}
        self.copies: Counter[str] = Counter()
        self._count = 0

    def add(self, connect_to: int = 8, settings: GossipSettings | None = None) -> Router:
        """A new node connected to ``connect_to`` random live nodes (as a DHT would find)."""
        self._count += 1
        peer_id = f"peer{self._count:04d}"
        delivered = self.delivered[peer_id] = set()

        def on_message(message: GossipMessage) -> None:
            delivered.add(message.id)

        # Simulated ids carry no keys: the routing is measured here, signatures in
        # tests/gossip/test_signed.py.
        settings = settings or GossipSettings(require_signatures=False)
        router = Router(peer_id, MemoryWire(self, peer_id), settings,
                        on_message=on_message, clock=self.clock,
                        rng=random.Random(self.rng.random()))
        others = [p for p in self.routers if p not in self.dead]
        self.routers[peer_id] = router
        self.connections[peer_id] = set()
        for other in self.rng.sample(others, min(connect_to, len(others))):
            self.connect(peer_id, other)
        return router

    def connect(self, a: str, b: str) -> None:
        """Open a connection between two nodes."""
        self.connections[a].add(b)
        self.connections[b].add(a)
        self.routers[a].peer_joined(b)
        self.routers[b].peer_joined(a)

    def kill(self, peer_id: str) -> None:
        """The node dies: its connections close."""
        self.dead.add(peer_id)
        for other in self.connections.pop(peer_id, set()):
            self.connections[other].discard(peer_id)
            self.routers[other].peer_left(peer_id)
        self.connections[peer_id] = set()

    def alive(self) -> list[Router]:
        """The routers not killed."""
        return [r for p, r in self.routers.items() if p not in self.dead]

    def step(self, limit: int | None = None) -> int:
        """Deliver up to ``limit`` frames in flight (all when None); returns how many."""
        done = 0
        while self.queue and (limit is None or done < limit):
            sender, receiver, text = self.queue.popleft()
            done += 1
            if receiver in self.dead or sender in self.dead:
                continue
            frame = json.loads(text)
            if frame.get("op") == "msg":
                self.copies[receiver] += 1
            self.routers[receiver].handle(sender, frame)
        return done

    def heartbeat(self, seconds: float = 1.0) -> None:
        """The clock advances; every live router beats; the frames it sent are delivered."""
        self.clock.now += seconds
        for router in self.alive():
            router.heartbeat()
        self.step()
