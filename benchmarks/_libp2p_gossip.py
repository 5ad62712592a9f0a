"""py-libp2p's GossipSub, the baseline of ``benchmarks/overlay.py`` (run in its own venv).

    VENV/bin/python benchmarks/_libp2p_gossip.py --nodes 50 --messages 50 --seed 1

N py-libp2p hosts in this process (trio), TCP on loopback, Noise (py-libp2p's default
security) and Yamux; GossipSub v1.1 with D = 8 (6-12) and a 1 s heartbeat, origin-signed
messages (py-libp2p's strict signing). Each host dials 6 random earlier ones; host 0
publishes (not subscribed: fan-out), the others subscribe. Prints one JSON line: delivered
share, p50/p99 propagation in ms, bytes of RPCs written per delivered message, most
connections of a host. It does not import p2phost (it runs where libp2p is installed).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

TOPIC = "bench"
PROTOCOL = "/meshsub/1.1.0"
written = [0]


def _count_writes() -> None:
    original = pubsub_module.Pubsub.write_msg

    async def counting(self: Any, stream: Any, rpc_msg: Any) -> bool:
        written[0] += rpc_msg.ByteSize()
        return bool(await original(self, stream, rpc_msg))

    pubsub_module.Pubsub.write_msg = counting  # type: ignore[method-assign]


async def run(count: int, messages: int, rng: random.Random) -> dict[str, float]:
    _count_writes()
    latencies: list[float] = []
    expected = messages * (count - 1)
    hosts = [new_host(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
             for _ in range(count)]
    routers = [GossipSub(protocols=[PROTOCOL], degree=8, degree_low=6, degree_high=12,
                         heartbeat_initial_delay=0.1, heartbeat_interval=1)
               for _ in range(count)]
    pubsubs = [Pubsub(host, router) for host, router in zip(hosts, routers, strict=True)]
    done = trio.Event()

    async def receive(subscription: Any) -> None:
        while True:
            message = await subscription.get()
            latencies.append(time.perf_counter() - json.loads(message.data)["t"])
            if len(latencies) >= expected:
                done.set()

    async with trio.open_nursery() as nursery:
        async with _AllRunning(hosts, pubsubs, routers) as _:
            for i, host in enumerate(hosts[1:], 1):
                for j in rng.sample(range(i), min(6, i)):
                    addr = hosts[j].get_addrs()[0]
                    await host.connect(info_from_p2p_addr(addr))
            for pubsub in pubsubs[1:]:
                nursery.start_soon(receive, await pubsub.subscribe(TOPIC))
            # Meshes form on the heartbeats: wait (60 s at most) until every subscriber
            # has mesh peers and the publisher knows subscribers to fan out to.
            for _ in range(300):  # 60 s
                if all(r.mesh.get(TOPIC) for r in routers[1:]) \
                        and pubsubs[0].peer_topics.get(TOPIC):
                    break
                await trio.sleep(0.2)
            await trio.sleep(1.0)
            written[0] = 0
            for _ in range(messages):
                body = json.dumps({"t": time.perf_counter(), "pad": "x" * 200}).encode()
                await pubsubs[0].publish(TOPIC, body)
                await trio.sleep(0.02)
            with trio.move_on_after(60):
                await done.wait()
            links = max(len(h.get_network().connections) for h in hosts)
            nursery.cancel_scope.cancel()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 \
            if latencies else float("nan")

    return {"delivered": len(latencies) / expected, "p50": pct(0.5), "p99": pct(0.99),
            "bytes": written[0] / max(1, len(latencies)), "links": links}


class _AllRunning:
    """Every host listening and every pubsub and router running, for the block."""

    def __init__(self, hosts: list[Any], pubsubs: list[Any], routers: list[Any]) -> None:
        self._parts = (hosts, pubsubs, routers)
        self._stack: Any = None

    async def __aenter__(self) -> _AllRunning:
        from contextlib import AsyncExitStack

        hosts, pubsubs, routers = self._parts
        self._stack = AsyncExitStack()
        for host, pubsub, router in zip(hosts, pubsubs, routers, strict=True):
            await self._stack.enter_async_context(
                host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]))
            await self._stack.enter_async_context(background_trio_service(pubsub))
            await self._stack.enter_async_context(background_trio_service(router))
            await pubsub.wait_until_ready()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.move_on_after(20):
            await self._stack.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = trio.run(run, args.nodes, args.messages, random.Random(args.seed))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
