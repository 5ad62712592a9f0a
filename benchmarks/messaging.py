"""p2phost messaging beside raw asyncio streams and pyzmq, in one run.

Each system runs its server in a separate process and its client here, over TCP on
127.0.0.1, with the same workloads:

* one-way throughput (messages/s) for 64 B, 1 KiB and 64 KiB bodies: the client sends N
  messages as fast as it can, then one request that the server answers after handling
  all of them (every system handles a connection's messages in order);
* request/reply round trips, one at a time (p50 and p99);
* requests/s with 64 requests in flight on one connection.

p2phost runs tcp-transport and msgpack-codec (bodies are ``bytes``), on the node's real
path: envelope, mailbox, handler, reply. Raw asyncio is length-prefixed frames with
``readexactly`` and a dict of futures for the replies; pyzmq is its asyncio API with a
DEALER/ROUTER pair. Run ``python benchmarks/messaging.py`` (``--quick`` for a short run,
``--json FILE`` to keep the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _plugin in ("tcp-transport", "msgpack-codec"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

LENGTH = struct.Struct("!I")
ID = struct.Struct("!Q")
SIZES = {"64 B": 64, "1 KiB": 1024, "64 KiB": 65536}
IN_FLIGHT = 64


# -- servers (each runs in its own process) ---------------------------------------------

async def serve_raw(port: int) -> None:
    """Frames: b"o" + body (one-way), b"r" + id + body (request: echoed back)."""
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handled = 0
        try:
            while True:
                (size,) = LENGTH.unpack(await reader.readexactly(4))
                frame = await reader.readexactly(size)
                if frame[:1] == b"o":
                    handled += 1
                    continue
                reply = frame[:9] + (str(handled).encode() if frame[9:] == b"count" else
                                     frame[9:])
                writer.write(LENGTH.pack(len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_zmq(port: int) -> None:
    """ROUTER: [b"o", body] one-way, [b"r", id, body] request (echoed back)."""
    import zmq
    import zmq.asyncio

    context = zmq.asyncio.Context()
    socket = context.socket(zmq.ROUTER)
    socket.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    handled = 0
    while True:
        peer, kind, *rest = await socket.recv_multipart()
        if kind == b"o":
            handled += 1
            continue
        request_id, body = rest
        await socket.send_multipart(
            [peer, request_id, str(handled).encode() if body == b"count" else body])


def bench_node(port: int) -> Any:
    """A node with one app: ``sink`` counts messages, ``echo`` answers with the body."""
    from p2phost_msgpack_codec import MsgpackCodec
    from p2phost_tcp_transport import TcpTransport

    from p2phost._runtime import Node, NodeOptions
    from p2phost_sdk import App, Identity, Message, handler

    class Bench(App):
        name = "bench"
        handled = 0

        @handler("sink")
        async def sink(self, message: Message) -> None:
            self.handled += 1

        @handler("echo")
        async def echo(self, message: Message) -> Any:
            return self.handled if message.body == b"count" else message.body

    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/msgpack": MsgpackCodec()}, apps=[Bench()],
                options=NodeOptions(listen=[f"tcp://127.0.0.1:{port}"]))


async def serve_p2phost(port: int) -> None:
    """The p2phost server: :func:`bench_node` until killed."""
    async with bench_node(port):
        print("ready", flush=True)
        await asyncio.Event().wait()


# -- clients ------------------------------------------------------------------------------

class Client:
    """What every system's client offers the workloads."""

    async def send(self, body: bytes) -> None:
        raise NotImplementedError

    async def request(self, body: bytes) -> bytes:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class RawClient(Client):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.task = asyncio.ensure_future(self._replies())

    @classmethod
    async def open(cls, port: int) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def _replies(self) -> None:
        while True:
            (size,) = LENGTH.unpack(await self.reader.readexactly(4))
            frame = await self.reader.readexactly(size)
            self.pending.pop(ID.unpack_from(frame, 1)[0]).set_result(frame[9:])

    async def send(self, body: bytes) -> None:
        self.writer.write(LENGTH.pack(len(body) + 1) + b"o" + body)
        await self.writer.drain()

    async def request(self, body: bytes) -> bytes:
        request_id = next(self.ids)
        reply = self.pending[request_id] = asyncio.get_running_loop().create_future()
        self.writer.write(LENGTH.pack(len(body) + 9) + b"r" + ID.pack(request_id) + body)
        await self.writer.drain()
        return await reply

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()


class ZmqClient(Client):
    def __init__(self, port: int) -> None:
        import zmq
        import zmq.asyncio

        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.connect(f"tcp://127.0.0.1:{port}")
        self.ids = itertools.count(1)
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.task = asyncio.ensure_future(self._replies())

    async def _replies(self) -> None:
        while True:
            request_id, body = await self.socket.recv_multipart()
            self.pending.pop(request_id).set_result(body)

    async def send(self, body: bytes) -> None:
        await self.socket.send_multipart([b"o", body])

    async def request(self, body: bytes) -> bytes:
        request_id = ID.pack(next(self.ids))
        reply = self.pending[request_id] = asyncio.get_running_loop().create_future()
        await self.socket.send_multipart([b"r", request_id, body])
        return await reply

    async def close(self) -> None:
        self.task.cancel()
        self.socket.close(linger=0)
        self.context.term()


class P2PClient(Client):
    def __init__(self, node: Any, peer: str) -> None:
        self.node, self.peer = node, peer

    @classmethod
    async def open(cls, port: int) -> P2PClient:
        from p2phost_msgpack_codec import MsgpackCodec
        from p2phost_tcp_transport import TcpTransport

        from p2phost._runtime import Node
        from p2phost_sdk import Identity

        node = Node(Identity.generate(), transports={"tcp": TcpTransport()},
                    codecs={"application/msgpack": MsgpackCodec()})
        await node.start()
        return cls(node, await node.connect(f"tcp://127.0.0.1:{port}"))

    async def send(self, body: bytes) -> None:
        await self.node.send(self.peer, "sink", body)

    async def request(self, body: bytes) -> bytes:
        reply: bytes = await self.node.request(self.peer, "echo", body)
        return reply

    async def close(self) -> None:
        await self.node.close()


# -- workloads ----------------------------------------------------------------------------

async def one_way(client: Client, size: int, count: int) -> float:
    """Messages/s, until the server has handled all of them."""
    body = os.urandom(size)
    before = int(await client.request(b"count"))
    started = time.perf_counter()
    for _ in range(count):
        await client.send(body)
    handled = int(await client.request(b"count")) - before
    elapsed = time.perf_counter() - started
    assert handled == count, f"{handled} of {count} handled"
    return count / elapsed


async def round_trips(client: Client, count: int) -> tuple[float, float]:
    """p50 and p99 of sequential request/reply, in microseconds."""
    body, times = os.urandom(64), []
    for _ in range(count):
        started = time.perf_counter()
        assert await client.request(body) == body
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


async def in_flight(client: Client, count: int) -> float:
    """Requests/s with IN_FLIGHT requests outstanding at all times."""
    body = os.urandom(64)

    async def worker(n: int) -> None:
        for _ in range(n):
            assert await client.request(body) == body

    started = time.perf_counter()
    await asyncio.gather(*(worker(count // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    return (count // IN_FLIGHT) * IN_FLIGHT / (time.perf_counter() - started)


async def measure(open_client: Callable[[], Awaitable[Client]], scale: float
                  ) -> dict[str, float]:
    client = await open_client()
    try:
        await one_way(client, 64, int(20_000 * scale))  # warm up
        await round_trips(client, 500)
        figures: dict[str, float] = {}
        counts = {"64 B": 200_000, "1 KiB": 100_000, "64 KiB": 5_000}
        for label, size in SIZES.items():
            figures[f"one-way {label} (msg/s)"] = await one_way(
                client, size, max(1000, int(counts[label] * scale)))
        p50, p99 = await round_trips(client, max(1000, int(10_000 * scale)))
        figures["round trip p50 (us)"] = p50
        figures["round trip p99 (us)"] = p99
        figures[f"requests/s, {IN_FLIGHT} in flight"] = await in_flight(
            client, max(6400, int(64_000 * scale)))
        return figures
    finally:
        await client.close()


def start_server(system: str, port: int, cpu: int = 1) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", system, "--port",
                                str(port), "--cpu", str(cpu)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit(f"the {system} server did not start")
    return process


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def opener(system: str, port: int) -> Callable[[], Awaitable[Client]]:
    return {
        "raw": lambda: RawClient.open(port),
        "zmq": lambda: _zmq(port),
        "p2phost": lambda: P2PClient.open(port),
    }[system]


async def run_system(system: str, scale: float) -> dict[str, float]:
    port = free_port()
    server = start_server(system, port)
    try:
        figures = await measure(opener(system, port), scale)
    finally:
        server.kill()
        server.wait()
    # Round trips again with both processes on one CPU: the software's own cost, without
    # the wake-up of an idle second CPU (on a VM that alone varies 2x from run to run).
    port = free_port()
    server = start_server(system, port, cpu=0)
    try:
        client = await opener(system, port)()
        await round_trips(client, 1000)
        figures["round trip p50, one CPU (us)"], _ = await round_trips(
            client, max(1000, int(10_000 * scale)))
        await client.close()
    finally:
        server.kill()
        server.wait()
    return figures


async def _zmq(port: int) -> Client:
    return ZmqClient(port)


async def run_rounds(systems: list[str], rounds: int, scale: float
                     ) -> dict[str, dict[str, float]]:
    """Every system once per round, in a rotating order; the median of the rounds.

    Other work on the machine comes and goes; interleaving the systems spreads it over
    all of them, and the median drops the rounds it hit hardest.
    """
    seen: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
    for round_number in range(rounds):
        shift = round_number % len(systems)
        for system in systems[shift:] + systems[:shift]:
            figures = await run_system(system, scale)
            print(f"[round {round_number + 1}] {system}: " + ", ".join(
                f"{k} {v:,.0f}" for k, v in figures.items()), file=sys.stderr, flush=True)
            for metric, value in figures.items():
                seen[system].setdefault(metric, []).append(value)
    return {s: {m: statistics.median(v) for m, v in metrics.items()}
            for s, metrics in seen.items()}


async def profile_p2phost(scale: float) -> None:
    """Both nodes in this process under cProfile: where a message's time goes."""
    import cProfile
    import pstats

    port = free_port()
    async with bench_node(port):
        client = await P2PClient.open(port)
        await one_way(client, 64, 20_000)
        messages, requests = max(10_000, int(100_000 * scale)), max(2000, int(20_000 * scale))
        for title, work in [
            ("one-way 64 B", lambda: one_way(client, 64, messages)),
            ("sequential request/reply", lambda: round_trips(client, requests)),
        ]:
            profiler = cProfile.Profile()
            profiler.enable()
            await work()
            profiler.disable()
            print(f"== profile: {title} (both nodes, one process; by own time)")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
        await client.close()


def report(results: dict[str, dict[str, float]]) -> None:
    names = {"p2phost": "p2phost", "raw": "raw asyncio", "zmq": "pyzmq asyncio"}
    print(f"{'':34}{names['p2phost']:>14}{names['raw']:>14}{'ratio':>8}"
          f"{names['zmq']:>16}{'ratio':>8}")
    for metric, mine in results["p2phost"].items():
        raw, zmq = results["raw"][metric], results["zmq"][metric]
        print(f"{metric:34}{mine:14,.0f}{raw:14,.0f}{mine / raw:8.2f}{zmq:16,.0f}"
              f"{mine / zmq:8.2f}")
    print("ratio = p2phost / baseline (for round trips lower is better: ratio < 1 is faster)")


def pin(cpu: int) -> None:
    """Client on CPU 0, servers on CPU 1 (or 0): every system gets the same placement
    (left to the scheduler, a round trip varies by 2x with where the two land)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=["raw", "zmq", "p2phost"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--only", choices=["raw", "zmq", "p2phost"], action="append",
                        help="run only these systems")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of every system; the median is reported (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--profile", action="store_true",
                        help="profile p2phost's two nodes in one process instead")
    args = parser.parse_args()
    pin(args.cpu if args.serve else 0)
    if args.serve:
        server = {"raw": serve_raw, "zmq": serve_zmq, "p2phost": serve_p2phost}[args.serve]
        asyncio.run(server(args.port))
        return
    scale = 0.1 if args.quick else 1.0
    if args.profile:
        asyncio.run(profile_p2phost(scale))
        return
    systems = args.only or ["p2phost", "raw", "zmq"]
    results = asyncio.run(run_rounds(systems, max(1, args.rounds), scale))
    if set(results) == {"p2phost", "raw", "zmq"}:
        report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
