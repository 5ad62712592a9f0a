"""Gossip propagation beside p2phost's own full-mesh ``publish``, real nodes, one run.

    python benchmarks/gossip.py [--nodes 50] [--messages 50] [--over mem|tcp]

Both runs use N p2phost nodes in this process with the JSON codec, on the memory transport
with no security plugin (``--over mem``, the pub/sub's own cost) or on TCP loopback with
noise-security (``--over tcp``, as benchmarks/overlay.py runs it beside py-libp2p):

- gossip: every node runs the gossip app and dials 6 random earlier nodes; node 0 publishes
  (not subscribed: fan-out), the others subscribe;
- full mesh: node 0 is connected to every other node and calls ``Messenger.publish`` (one
  copy to each subscriber), the others handle the topic.

Each message carries its send time; a node records when it got it. Printed per run:
delivered, propagation p50/p99 (ms, over every node and message), body bytes sent per
delivered message (JSON of the frames or bodies sent, all nodes), most connections any
node holds; and the ratios gossip / full mesh. Gossip messages are signed by their origin
and checked by every receiver, as the plugin runs. py-libp2p's GossipSub beside them:
benchmarks/overlay.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _plugin in ("gossip", "memory-transport", "json-codec", "tcp-transport", "noise-security"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

from p2phost_gossip import SIGNING_NAME, GossipApp, GossipMessage  # noqa: E402
from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402

from p2phost._runtime import Node, NodeOptions  # noqa: E402
from p2phost_sdk import (  # noqa: E402
    App,
    Identity,
    Message,
    Security,
    Transport,
    handler,
    plugin_payload,
)

TOPIC = "bench"
#: Where the nodes talk: ``mem`` (in-process, no security: the pub/sub's own cost) or
#: ``tcp`` (loopback with noise-security, as py-libp2p runs in benchmarks/overlay.py).
MEDIA = ("mem", "tcp")


def medium(name: str, tag: int) -> tuple[dict[str, Transport], list[Security], Any]:
    """Transports, security and a listen-address maker for ``name``."""
    if name == "tcp":
        return {"tcp": TcpTransport()}, [NoiseSecurity()], lambda i: "tcp://127.0.0.1:0"
    return {"mem": MemoryTransport()}, [], lambda i: f"mem://b{tag}-{i}"


class Tally(list[float]):
    """Latencies; ``done`` is set once ``expected`` arrived."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.done = asyncio.Event()

    def add(self, latency: float) -> None:
        self.append(latency)
        if len(self) >= self.expected:
            self.done.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)


class Receiver(App):
    """Records when each full-mesh message arrived."""

    name = "bench-receiver"

    def __init__(self, latencies: Tally) -> None:
        self.latencies = latencies

    @handler(TOPIC)
    async def got(self, message: Message) -> None:
        """One message: its latency."""
        self.latencies.add(time.perf_counter() - message.body["t"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def gossip_run(count: int, messages: int, rng: random.Random,
                     over: str = "mem") -> dict[str, float]:
    codecs = {"application/json": JsonCodec()}
    latencies = Tally(messages * (count - 1))
    sent_bytes = [0]
    identities = [Identity.generate() for _ in range(count)]
    # Messages signed by their origin and checked by every receiver, as the plugin runs.
    apps = [GossipApp({"heartbeat": 0.2, "graft-timeout": 0.1}, peer_id=identity.peer_id,
                      sign=lambda d, i=identity: i.sign(plugin_payload(SIGNING_NAME, d)))
            for identity in identities]
    for app in apps:
        original = app._outbox.send

        def counting(peer_id: str, frame: dict[str, Any], original: Any = original) -> None:
            sent_bytes[0] += len(json.dumps(frame))
            original(peer_id, frame)
        app._outbox.send = counting  # type: ignore[method-assign]
    transports, security, listen = medium(over, rng.randrange(10**9))
    nodes = [Node(identity, transports=transports, codecs=codecs, security=security,
                  apps=[app], options=NodeOptions(listen=[listen(i)]))
             for i, (identity, app) in enumerate(zip(identities, apps, strict=True))]
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        for i, node in enumerate(nodes[1:], 1):
            for j in rng.sample(range(i), min(6, i)):
                await asyncio.wait_for(node.connect(nodes[j].addresses[0]), 10)

        def record(message: GossipMessage) -> None:
            latencies.add(time.perf_counter() - message.data["t"])
        for app in apps[1:]:
            app.subscribe(TOPIC, record)
        await asyncio.sleep(1.0)  # meshes graft on the heartbeats
        sent_bytes[0] = 0
        for _ in range(messages):
            apps[0].publish(TOPIC, {"t": time.perf_counter(), "pad": "x" * 200})
            await asyncio.sleep(0.02)
        await latencies.wait(10)
        links = max(len(n.peers()) for n in nodes)
    return summary(latencies, messages * (count - 1), sent_bytes[0], links)


async def full_mesh_run(count: int, messages: int, rng: random.Random,
                        over: str = "mem") -> dict[str, float]:
    codecs = {"application/json": JsonCodec()}
    latencies = Tally(messages * (count - 1))
    transports, security, listen = medium(over, rng.randrange(10**9))
    nodes = [Node(Identity.generate(), transports=transports, codecs=codecs, security=security,
                  apps=[] if i == 0 else [Receiver(latencies)],
                  options=NodeOptions(listen=[listen(i)], peer_limit=count + 8))
             for i in range(count)]
    sent = 0
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        for i in range(1, count):
            await asyncio.wait_for(nodes[0].connect(nodes[i].addresses[0]), 10)
        await asyncio.sleep(0.5)
        for _ in range(messages):
            body = {"t": time.perf_counter(), "pad": "x" * 200}
            sent += len(json.dumps(body)) * await nodes[0].publish(TOPIC, body)
            await asyncio.sleep(0.02)
        await latencies.wait(10)
        links = max(len(n.peers()) for n in nodes)
    return summary(latencies, messages * (count - 1), sent, links)


def summary(latencies: list[float], expected: int, sent: int, links: int) -> dict[str, float]:
    return {"delivered": len(latencies) / expected,
            "p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000,
            "bytes": sent / max(1, len(latencies)), "links": links}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--over", choices=MEDIA, default="mem")
    args = parser.parse_args()
    rng = random.Random(1)
    gossip = await gossip_run(args.nodes, args.messages, rng, args.over)
    full = await full_mesh_run(args.nodes, args.messages, rng, args.over)
    print(f"{args.nodes} nodes, {args.messages} messages")
    print(f"{'':10} {'delivered':>9} {'p50 ms':>8} {'p99 ms':>8} {'bytes/msg':>9} {'links':>5}")
    for name, row in (("gossip", gossip), ("full mesh", full)):
        print(f"{name:10} {row['delivered']:9.1%} {row['p50']:8.2f} {row['p99']:8.2f} "
              f"{row['bytes']:9.0f} {row['links']:5.0f}")
    ratios = {k: gossip[k] / full[k] if full[k] else float("nan")
              for k in ("p50", "p99", "bytes", "links")}
    print(f"{'ratio':10} {'':9} {ratios['p50']:8.2f} {ratios['p99']:8.2f} "
          f"{ratios['bytes']:9.2f} {ratios['links']:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
