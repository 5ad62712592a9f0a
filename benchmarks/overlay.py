"""The overlay beside its baselines, same machine, one run: DHT lookups beside the
``kademlia`` package (PyPI); gossip propagation beside py-libp2p's GossipSub and beside
p2phost's own full-mesh ``publish``.

    python benchmarks/overlay.py [--parts dht,gossip] [--sizes 50,100,200] [--lookups 200]
        [--gossip-nodes 50] [--messages 50] [--libp2p-python VENV/bin/python]

**Gossip.** 50 nodes in one process each, TCP on loopback with Noise for all three:
p2phost's gossip plugin (D = 8, heartbeat 0.2 s, origin-signed messages) and p2phost's
full-mesh ``publish`` (benchmarks/gossip.py ``--over tcp``), and py-libp2p's GossipSub
(benchmarks/_libp2p_gossip.py: D = 8, heartbeat 1 s, strict signing), which runs in its own
venv, as py-libp2p's dependencies are not the project's: make it once with
``python3.11 -m venv /tmp/libp2p-venv && /tmp/libp2p-venv/bin/pip install libp2p`` and pass
``--libp2p-python /tmp/libp2p-venv/bin/python`` (or set ``LIBP2P_PYTHON``). Each node dials
6 random earlier ones; node 0 publishes 50 messages of ~230 bytes, 20 ms apart, not
subscribed (fan-out); the 49 others subscribe. Printed: delivered, propagation p50/p99 in
ms, bytes the pub/sub wrote per delivered message (p2phost: JSON of gossip frames or
bodies; py-libp2p: protobuf RPCs; neither counts framing or encryption), most connections
of one node; ratios p2phost gossip / py-libp2p (below 1 is better for us).

**DHT.**
For each size N, both DHTs run N nodes in this process on UDP over loopback (kademlia's
own rpcudp; dht-discovery's core over a small JSON-over-UDP Rpc, so neither has a p2phost
node's connections and security under it), joined one after the other through node 0,
each as its package joins by default (kademlia: its own id; dht-discovery: its own key, then
one random key per bucket farther than its closest contact's, so its build takes longer).
Then ``--lookups`` times a random node looks up a random other node's id:

- dht-discovery: ``find_peer``, which stops when the target's signed record arrives (and
  verifies it); 0 hops when the asker's table already holds the target;
- kademlia: its ``find_node`` never returns the id asked for, so a peer is found the way
  its users do it: every node stores its address under its own id (``set_digest``), and a
  lookup is the value crawl ``get`` runs (``ValueSpiderCrawl``), stopping at the value;
  0 hops when the asker stores it itself;
- hops: request rounds of the lookup; time: wall time until it returned; cpu p50: the
  median of the process's CPU time during one lookup; cpu ms: CPU time of the process over
  all lookups, divided by their number (both count the askers' and the answerers' work:
  every node runs in this process, and both are steadier than wall time on a busy
  machine); 1hop ms: the median wall time of the lookups that took exactly one round
  (the cost of one round beside one round, whatever each table already held); join
  peers: how many distinct peers one node's join sent requests to, the mean and the most
  over the joins (each a connection dialled, in a node); load: the 1-minute load average when the
  row was printed.

The rows print both and the ratios dht-discovery / kademlia (below 1 is better for us).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "official-plugins" / "dht-discovery" / "src"))

from p2phost_dht_discovery import Dht, DhtSettings  # noqa: E402

from p2phost_sdk import Identity, PresenceSigner, SignedPresence  # noqa: E402


class UdpRpc(asyncio.DatagramProtocol):
    """DHT requests as JSON datagrams: {"id", "request"} -> {"id", "reply"|"error"}."""

    def __init__(self) -> None:
        self.dht: Dht | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count()
        self._answering: set[asyncio.Future[None]] = set()
        #: The peers this node sent requests to (the join's, while it joins).
        self.asked: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = json.loads(data)
        if "request" in message:
            task = asyncio.ensure_future(self._answer(message, addr))
            self._answering.add(task)  # owned until done, so it is not collected mid-way
            task.add_done_callback(self._answering.discard)
            return
        future = self._pending.pop(message["id"], None)
        if future is not None and not future.done():
            future.set_result(message)

    async def _answer(self, message: dict[str, Any], addr: tuple[str, int]) -> None:
        assert self.dht is not None and self.transport is not None
        # UDP proves nothing: the sender's id comes from its own record (benchmark only;
        # in a node the security plugin proves it).
        sender = str(message["request"].get("from", ""))[:52]
        try:
            out = {"id": message["id"], "reply": await self.dht.handle(sender,
                                                                       message["request"])}
        except Exception as exc:
            out = {"id": message["id"], "error": str(exc)}
        self.transport.sendto(json.dumps(out).encode(), addr)

    async def call(self, peer_id: str, addresses: Sequence[str],
                   request: dict[str, Any]) -> dict[str, Any]:
        assert self.transport is not None
        self.asked.add(peer_id)
        host, _, port = addresses[0].removeprefix("udp://").rpartition(":")
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        self.transport.sendto(json.dumps({"id": number, "request": request}).encode(),
                              (host, int(port)))
        try:
            answer = await future
        finally:
            self._pending.pop(number, None)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        reply: dict[str, Any] = answer["reply"]
        return reply


async def ours(size: int, lookups: int, rng: random.Random) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    nodes: list[Dht] = []
    rpcs: list[UdpRpc] = []
    started = time.perf_counter()
    for _ in range(size):
        identity = Identity.generate()
        signer = PresenceSigner(identity)
        transport, rpc = await loop.create_datagram_endpoint(UdpRpc, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]

        def sign(scope: str, addresses: Sequence[str], lifetime: float,
                 signer: PresenceSigner = signer) -> SignedPresence:
            return signer.sign(scope, addresses, lifetime=lifetime)

        node = Dht(identity.peer_id, sign, rpc, DhtSettings(request_timeout=5.0),
                   addresses=[f"udp://127.0.0.1:{port}"])
        rpc.dht = node
        nodes.append(node)
        rpcs.append(rpc)
    joined = []
    for node, rpc in zip(nodes[1:], rpcs[1:], strict=True):
        rpc.asked.clear()
        await node.join([(nodes[0].peer_id, nodes[0].addresses)])
        joined.append(len(rpc.asked))
    built = time.perf_counter() - started
    hops, times, cpus, found = [], [], [], 0
    cpu = time.process_time()
    for _ in range(lookups):
        asker, target = rng.sample(nodes, 2)
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = await asker.find_peer_result(target.peer_id)
        times.append(time.perf_counter() - begin)
        cpus.append(time.process_time() - begin_cpu)
        if result.found is not None:
            found += 1
        hops.append(result.hops if result.found is not None else -1)
    cpu = time.process_time() - cpu
    for rpc in rpcs:
        assert rpc.transport is not None
        rpc.transport.close()
    return summary(hops, times, cpus, found, lookups, built, cpu, joined)


async def theirs(size: int, lookups: int, rng: random.Random) -> dict[str, float]:
    from kademlia.crawling import ValueSpiderCrawl
    from kademlia.network import Server
    from kademlia.node import Node

    class Counting(ValueSpiderCrawl):  # type: ignore[misc]
        rounds = 0

        async def _nodes_found(self, responses: dict[Any, Any]) -> Any:
            self.rounds += 1
            return await super()._nodes_found(responses)

    servers: list[Any] = []
    ports: list[int] = []
    started = time.perf_counter()
    for _ in range(size):
        server = Server(ksize=20, alpha=3)
        await server.listen(0, interface="127.0.0.1")
        servers.append(server)
        ports.append(server.transport.get_extra_info("sockname")[1])
    joined = []
    for server in servers[1:]:
        asked: set[Any] = set()
        send = server.transport.sendto

        def sendto(data: bytes, addr: Any, send: Any = send, asked: set[Any] = asked) -> None:
            if data[:1] == b"\x00":  # rpcudp: a request (b"\x01": an answer)
                asked.add(addr)
            send(data, addr)

        server.transport.sendto = sendto
        await server.bootstrap([("127.0.0.1", ports[0])])
        server.transport.sendto = send
        joined.append(len(asked))
    # kademlia's find_node never returns the id asked for, so a peer is found the way its
    # users do: each node stores its address under its own id, and a lookup gets it.
    for server, port in zip(servers, ports, strict=True):
        await server.set_digest(server.node.id, f"udp://127.0.0.1:{port}")
    built = time.perf_counter() - started
    hops, times, cpus, found = [], [], [], 0
    cpu = time.process_time()
    for _ in range(lookups):
        a, b = rng.sample(range(size), 2)
        asker, target = servers[a], servers[b]
        begin, begin_cpu = time.perf_counter(), time.process_time()
        value = asker.storage.get(target.node.id)
        rounds = 0
        if value is None:
            node = Node(target.node.id)
            nearest = asker.protocol.router.find_neighbors(node)
            crawl = Counting(asker.protocol, node, nearest, asker.ksize, asker.alpha)
            value = await crawl.find()
            rounds = crawl.rounds
        times.append(time.perf_counter() - begin)
        cpus.append(time.process_time() - begin_cpu)
        if value == f"udp://127.0.0.1:{ports[b]}":
            found += 1
        hops.append(rounds if value == f"udp://127.0.0.1:{ports[b]}" else -1)
    cpu = time.process_time() - cpu
    for server in servers:
        server.stop()
    return summary(hops, times, cpus, found, lookups, built, cpu, joined)


def summary(hops: list[int], times: list[float], cpus: list[float], found: int,
            lookups: int, built: float, cpu: float, joined: list[int]) -> dict[str, float]:
    """One row: ``hops`` is each lookup's rounds, -1 when it did not find the peer."""
    one_hop = [t for h, t in zip(hops, times, strict=True) if h == 1] or [0.0]
    hops = [h for h in hops if h >= 0] or [0]
    times = sorted(times)
    return {"found": found / lookups, "hops_median": statistics.median(hops),
            "hops_mean": statistics.fmean(hops), "hops_max": max(hops),
            "ms_median": statistics.median(times) * 1000,
            "ms_p90": times[int(len(times) * 0.9)] * 1000, "cpu_ms": cpu / lookups * 1000,
            "cpu_p50": statistics.median(cpus) * 1000,
            "one_hop_ms": statistics.median(one_hop) * 1000, "build_s": built,
            "join_peers": statistics.fmean(joined or [0]), "join_max": max(joined or [0])}


async def main(sizes: list[int], lookups: int) -> None:
    import logging

    logging.getLogger("kademlia").setLevel(logging.ERROR)
    print(f"{'N':>4} {'':12} {'found':>6} {'hops p50':>8} {'mean':>5} {'max':>4} "
          f"{'ms p50':>8} {'ms p90':>8} {'cpu p50':>7} {'cpu ms':>7} {'1hop ms':>7} "
          f"{'build s':>8} {'join peers':>10} {'load':>5}")
    for size in sizes:
        a = await ours(size, lookups, random.Random(size))
        b = await theirs(size, lookups, random.Random(size))
        for name, row in (("dht-discovery", a), ("kademlia", b)):
            print(f"{size:>4} {name:12} {row['found']:>6.1%} {row['hops_median']:>8.1f} "
                  f"{row['hops_mean']:>5.2f} {row['hops_max']:>4.0f} {row['ms_median']:>8.2f} "
                  f"{row['ms_p90']:>8.2f} {row['cpu_p50']:>7.3f} {row['cpu_ms']:>7.3f} "
                  f"{row['one_hop_ms']:>7.2f} {row['build_s']:>8.2f} "
                  f"{row['join_peers']:>5.1f}/{row['join_max']:<4.0f} {os.getloadavg()[0]:>5.1f}")
        print(f"{size:>4} {'ratio':12} {'':>6} {ratio(a, b, 'hops_median'):>8} "
              f"{ratio(a, b, 'hops_mean'):>5} {'':>4} {ratio(a, b, 'ms_median'):>8} "
              f"{ratio(a, b, 'ms_p90'):>8} {ratio(a, b, 'cpu_p50'):>7} "
              f"{ratio(a, b, 'cpu_ms'):>7} {ratio(a, b, 'one_hop_ms'):>7} "
              f"{ratio(a, b, 'build_s'):>8} {ratio(a, b, 'join_peers'):>10}")


async def gossip(nodes: int, messages: int, libp2p_python: str | None) -> None:
    """p2phost gossip and full mesh over tcp + noise, beside py-libp2p's GossipSub."""
    import logging

    sys.path.insert(0, str(REPO / "benchmarks"))
    import gossip as ours_gossip  # benchmarks/gossip.py

    logging.getLogger("p2phost").setLevel(logging.ERROR)
    rows: dict[str, dict[str, float]] = {}
    rows["p2phost gossip"] = await ours_gossip.gossip_run(nodes, messages, random.Random(1),
                                                          "tcp")
    rows["p2phost full mesh"] = await ours_gossip.full_mesh_run(nodes, messages,
                                                                random.Random(1), "tcp")
    if libp2p_python:  # alone on the loop: nothing of ours runs meanwhile
        done = await asyncio.to_thread(
            subprocess.run,
            [libp2p_python, str(REPO / "benchmarks" / "_libp2p_gossip.py"), "--nodes",
             str(nodes), "--messages", str(messages)], capture_output=True, text=True,
            timeout=900, cwd="/")
        try:
            rows["py-libp2p gossipsub"] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            print(f"py-libp2p run failed:\n{done.stderr[-2000:]}")
    print(f"\ngossip: {nodes} nodes, {messages} messages, tcp loopback + noise, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'':20} {'delivered':>9} {'p50 ms':>8} {'p99 ms':>8} {'bytes/msg':>9} "
          f"{'links':>5}")
    for name, row in rows.items():
        print(f"{name:20} {row['delivered']:9.1%} {row['p50']:8.2f} {row['p99']:8.2f} "
              f"{row['bytes']:9.0f} {row['links']:5.0f}")
    base = rows.get("py-libp2p gossipsub")
    if base is None:
        print("py-libp2p: not run; make its venv: python3.11 -m venv /tmp/libp2p-venv && "
              "/tmp/libp2p-venv/bin/pip install libp2p; then --libp2p-python "
              "/tmp/libp2p-venv/bin/python")
        return
    ours_row = rows["p2phost gossip"]
    print(f"{'ratio gossip/libp2p':20} {'':9} " + " ".join(
        f"{ratio(ours_row, base, k):>8}" for k in ("p50", "p99")) +
        f" {ratio(ours_row, base, 'bytes'):>9} {ratio(ours_row, base, 'links'):>5}")


def ratio(a: dict[str, float], b: dict[str, float], name: str) -> str:
    """dht-discovery / kademlia for one column ("-" when kademlia's is 0)."""
    return f"{a[name] / b[name]:.2f}" if b[name] else "-"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="dht,gossip")
    parser.add_argument("--sizes", default="50,100,200")
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--gossip-nodes", type=int, default=50)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--libp2p-python", default=os.environ.get("LIBP2P_PYTHON"))
    options = parser.parse_args()
    parts = options.parts.split(",")
    if "dht" in parts:
        asyncio.run(main([int(s) for s in options.sizes.split(",")], options.lookups))
    if "gossip" in parts:
        asyncio.run(gossip(options.gossip_nodes, options.messages, options.libp2p_python))
