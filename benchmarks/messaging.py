"""p2phost messaging beside raw asyncio streams and pyzmq, in one run.

Each system runs its server in a separate process and its client here, over TCP on
127.0.0.1, with the same workloads:

* one-way throughput (messages/s) for 64 B, 1 KiB and 64 KiB bodies: the client sends N
  messages as fast as it can, then one request that the server answers after handling
  all of them (every system handles a connection's messages in order);
* request/reply round trips, one at a time (p50 and p99), with client and server on two
  CPUs and on one;
* requests/s with 64 requests in flight on one connection.

Round trips and requests in flight are measured with every system's server up, in
turns (see ``in_turns``).

p2phost runs tcp-transport and msgpack-codec (bodies are ``bytes``), on the node's real
path: envelope, mailbox, handler, reply; ``p2phost+noise`` adds noise-security on both
nodes. Raw asyncio is length-prefixed frames with ``readexactly`` and a dict of futures
for the replies; pyzmq is its asyncio API with a DEALER/ROUTER pair. Every system runs
on the default asyncio event loop, and p2phost and raw asyncio again on uvloop (server
and client alike). Beside the rates it prints the server's CPU time per one-way message
and per request (from ``/proc/PID/schedstat``): on a busy machine that figure holds
where wall-clock rates swing with the other load.

Each round runs every system once; the figures are the medians of the rounds, and each
ratio is taken within a round (both systems measured minutes apart at most) and printed
as its median with the lowest and highest round's in brackets. The load average is
printed before and after. Run ``python benchmarks/messaging.py`` (``--quick`` for a
short run, ``--json FILE`` to keep the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
for _plugin in ("tcp-transport", "msgpack-codec", "noise-security"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

#: The environment variable holding the CPUs the run's first process could use, set on
#: import before it pins itself to one: its servers inherit the variable and pin
#: themselves from it (their own affinity is the client's CPU by then).
CPUS = "P2PHOST_BENCHMARK_CPUS"
if hasattr(os, "sched_getaffinity"):
    os.environ.setdefault(CPUS, ",".join(map(str, sorted(os.sched_getaffinity(0)))))

T = TypeVar("T")
LENGTH = struct.Struct("!I")
ID = struct.Struct("!Q")
SIZES = {"64 B": 64, "1 KiB": 1024, "64 KiB": 65536}
IN_FLIGHT = 64
#: Round trips per system per turn (see in_turns).
TURN = 250
#: Requests in flight per system, and per turn (see in_turns). 256k in all, about 1.5 s:
#: measured at once, 64k let the first batches' ramp weigh on the figure, p2phost's more
#: than raw asyncio's. Four turns of 64k beside one measure of 256k, alternated, gave
#: both systems a little less, alike (docs/performance.md, twenty-first session).
IN_FLIGHT_COUNT, IN_FLIGHT_TURN = 256_000, 64_000
LOOPS = ("asyncio", "uvloop")
#: ``--round-trips``: the one-way workloads are left out (set by main).
ROUND_TRIPS_ONLY = False
#: The systems run on each event loop (pyzmq's asyncio API is measured on asyncio's).
SYSTEMS = {"asyncio": ["p2phost", "p2phost+noise", "raw", "zmq"],
           "uvloop": ["p2phost", "p2phost+noise", "raw"]}


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


def security(secure: bool) -> list[Any]:
    """noise-security when ``secure``, else none."""
    from p2phost_noise_security import NoiseSecurity

    return [NoiseSecurity()] if secure else []


def bench_app(answers: dict[bytes, Callable[[], Awaitable[Any]]] | None = None) -> Any:
    """The server's app: ``sink`` counts messages; ``echo`` answers ``b"count"`` with that
    count, a body in ``answers`` with what its function returns (``b"cpu"`` by default:
    this process's CPU seconds so far), anything else with itself."""
    from p2phost_sdk import App, Message, handler

    async def cpu() -> float:
        return time.process_time()

    special = {b"cpu": cpu, **(answers or {})}

    class Bench(App):
        name = "bench"
        handled = 0

        @handler("sink")
        async def sink(self, message: Message) -> None:
            self.handled += 1

        @handler("echo")
        async def echo(self, message: Message) -> Any:
            if message.body == b"count":
                return self.handled
            answer = special.get(message.body)
            return message.body if answer is None else await answer()

    return Bench()


def bench_node(port: int, secure: bool = False,
               answers: dict[bytes, Callable[[], Awaitable[Any]]] | None = None) -> Any:
    """A node with :func:`bench_app` (given ``answers``)."""
    from p2phost_msgpack_codec import MsgpackCodec
    from p2phost_tcp_transport import TcpTransport

    from p2phost._runtime import Node, NodeOptions
    from p2phost_sdk import Identity

    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/msgpack": MsgpackCodec()}, apps=[bench_app(answers)],
                security=security(secure),
                options=NodeOptions(listen=[f"tcp://127.0.0.1:{port}"]))


async def serve_p2phost(port: int, secure: bool = False) -> None:
    """The p2phost server: :func:`bench_node` until killed."""
    async with bench_node(port, secure):
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
    async def open(cls, port: int, secure: bool = False) -> P2PClient:
        from p2phost_msgpack_codec import MsgpackCodec
        from p2phost_tcp_transport import TcpTransport

        from p2phost._runtime import Node
        from p2phost_sdk import Identity

        node = Node(Identity.generate(), transports={"tcp": TcpTransport()},
                    codecs={"application/msgpack": MsgpackCodec()},
                    security=security(secure))
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


async def round_trip_times(client: Client, count: int) -> list[float]:
    """Sequential request/reply: each round trip's time, in microseconds."""
    body, times = os.urandom(64), []
    for _ in range(count):
        started = time.perf_counter()
        assert await client.request(body) == body
        times.append((time.perf_counter() - started) * 1e6)
    return times


def p50_p99(times: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile of ``times``."""
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


async def round_trips(client: Client, count: int) -> tuple[float, float]:
    """p50 and p99 of sequential request/reply, in microseconds."""
    return p50_p99(await round_trip_times(client, count))


async def in_flight(client: Client, count: int, depth: int = IN_FLIGHT) -> float:
    """Requests/s with ``depth`` requests outstanding at all times."""
    body = os.urandom(64)

    async def worker(n: int) -> None:
        for _ in range(n):
            assert await client.request(body) == body

    started = time.perf_counter()
    await asyncio.gather(*(worker(count // depth) for _ in range(depth)))
    return (count // depth) * depth / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used so far (scheduler statistics: nanoseconds, not ticks)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


async def measure(open_client: Callable[[], Awaitable[Client]], scale: float, server: int,
                  one_way_only: bool = False) -> dict[str, float]:
    """One server's figures: one-way, then (unless ``one_way_only``: see
    :func:`in_turns`) round trips and requests in flight."""
    client = await open_client()
    try:
        await one_way(client, 64, int(20_000 * scale))  # warm up
        await round_trips(client, 500)
        figures: dict[str, float] = {}
        counts = {"64 B": 200_000, "1 KiB": 100_000, "64 KiB": 5_000}
        for label, size in ({} if ROUND_TRIPS_ONLY else SIZES).items():
            count = max(1000, int(counts[label] * scale))
            before, mine = cpu_seconds(server), time.process_time()
            figures[f"one-way {label} (msg/s)"] = await one_way(client, size, count)
            if label != "64 KiB":
                figures[f"server CPU per {label} msg (us)"] = (
                    cpu_seconds(server) - before) / count * 1e6
                figures[f"client CPU per {label} msg (us)"] = (
                    time.process_time() - mine) / count * 1e6
        if not one_way_only:
            count = max(1000, int(10_000 * scale))
            before = cpu_seconds(server)
            p50, p99 = await round_trips(client, count)
            figures["server CPU per request (us)"] = (cpu_seconds(server) - before) / count * 1e6
            figures["round trip p50 (us)"] = p50
            figures["round trip p99 (us)"] = p99
            figures[f"requests/s, {IN_FLIGHT} in flight"] = await in_flight(
                client, max(6400, int(IN_FLIGHT_COUNT * scale)))
        return figures
    finally:
        await client.close()


async def warm_up(client: Client) -> None:
    """Take a new server and its client where a process that has been running is: past
    a one-way flood of 64 KiB bodies and a burst of 64 KiB answers, then round trips.

    asyncio's own transports read up to 256 KiB at a time into a new ``bytes``, which
    glibc's malloc serves from memory mapped for it (three system calls a read) until
    it has freed one read of over 128 KiB. Without this, raw asyncio's server on
    asyncio's loop took 67-99 µs of CPU per round trip instead of 40-53, and its p50
    142-193 µs instead of 118-135; p2phost's (64 KiB reads) and uvloop's (a buffer of
    its own) do not change.
    """
    await one_way(client, 65536, 500)
    answer = os.urandom(65536)
    await asyncio.gather(*(client.request(answer) for _ in range(32)))
    await round_trips(client, 500)


@contextlib.asynccontextmanager
async def servers_up(systems: list[str], loop: str, cpu: int
                     ) -> AsyncIterator[dict[str, tuple[Client, int]]]:
    """Every system's server on ``cpu`` at once, each with its client, warmed up:
    ``{system: (client, server pid)}``. The servers are killed on the way out, whatever
    failed."""
    servers: list[subprocess.Popen[str]] = []
    up: dict[str, tuple[Client, int]] = {}
    try:
        for system in systems:
            port = free_port()
            servers.append(server := start_server(system, port, loop, cpu))
            client = await opener(system, port)()
            up[system] = (client, server.pid)
            await warm_up(client)
        yield up
    finally:
        try:
            for client, _ in up.values():
                await client.close()
        finally:
            for server in servers:
                server.kill()
                server.wait()


async def round_trips_in_turns(up: dict[str, tuple[Client, int]], count: int
                               ) -> dict[str, tuple[list[float], float]]:
    """``count`` round trips of every system, TURN at a time in turns: each round trip's
    time (microseconds) and the server's CPU seconds in all."""
    times: dict[str, list[float]] = {system: [] for system in up}
    served = dict.fromkeys(up, 0.0)
    for _ in range(count // TURN):
        for system, (client, pid) in up.items():
            before = cpu_seconds(pid)
            times[system] += await round_trip_times(client, TURN)
            served[system] += cpu_seconds(pid) - before
    return {system: (times[system], served[system]) for system in up}


async def in_flight_in_turns(up: dict[str, tuple[Client, int]], count: int
                             ) -> dict[str, float]:
    """Requests/s of every system with IN_FLIGHT in flight, ``count`` requests each in
    turns of about IN_FLIGHT_TURN (one turn when ``count`` is smaller)."""
    turns = max(1, count // IN_FLIGHT_TURN)
    turn = count // turns
    elapsed = dict.fromkeys(up, 0.0)
    for _ in range(turns):
        for system, (client, _) in up.items():
            elapsed[system] += turn / await in_flight(client, turn)
    return {system: turns * turn / elapsed[system] for system in up}


async def in_turns(systems: list[str], loop: str, scale: float) -> dict[str, dict[str, float]]:
    """Round trips and requests in flight of every system in turns, with every server
    up at once: round trips (p50, p99, the server's CPU per request) and requests in
    flight on two CPUs, then round trips on one (the software's own cost, without the
    wake-up of an idle second CPU).

    On two CPUs a round trip is mostly the VM waking an idle CPU, twice, and what that
    costs drifts by tens of microseconds from one minute to the next; requests in flight
    swing by a third from one second to the next, with the same system calls per
    request (other tenants of the host, likely). Measured one system after the other, a
    minute apart, the ratio of two systems swung from 0.9 to 1.5 between the rounds of
    one run; taken in turns, every system meets the same conditions.
    """
    figures: dict[str, dict[str, float]] = {system: {} for system in systems}
    requests = max(1000, int(10_000 * scale))
    async with servers_up(systems, loop, cpu=1) as up:
        for system, (times, served) in (await round_trips_in_turns(up, requests)).items():
            p50, p99 = p50_p99(times)
            figures[system]["server CPU per request (us)"] = served / len(times) * 1e6
            figures[system]["round trip p50 (us)"] = p50
            figures[system]["round trip p99 (us)"] = p99
        rates = await in_flight_in_turns(up, max(6400, int(IN_FLIGHT_COUNT * scale)))
        for system, rate in rates.items():
            figures[system][f"requests/s, {IN_FLIGHT} in flight"] = rate
    async with servers_up(systems, loop, cpu=0) as up:
        for system, (times, _) in (await round_trips_in_turns(up, requests)).items():
            figures[system]["round trip p50, one CPU (us)"], _ = p50_p99(times)
    return figures


def start_server(system: str, port: int, loop: str, cpu: int = 1) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", system, "--port",
                                str(port), "--cpu", str(cpu), "--loop", loop],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert process.stdout is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {system} server did not start")
        check_placement(process.pid, cpu)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def check_placement(server: int, cpu: int) -> None:
    """Refuse to measure "on two CPUs" with the server on the client's CPU."""
    if cpu and hasattr(os, "sched_getaffinity") and len(os.environ.get(CPUS, "").split(",")) > 1 \
            and os.sched_getaffinity(server) & os.sched_getaffinity(0):
        raise SystemExit(f"the server shares the client's CPU ({os.sched_getaffinity(server)}): "
                         "the two-CPU figures would be one CPU's")


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
        "p2phost+noise": lambda: P2PClient.open(port, secure=True),
    }[system]


async def run_system(system: str, loop: str, scale: float) -> dict[str, float]:
    """One server's one-way figures (the rest: :func:`in_turns`)."""
    port = free_port()
    server = start_server(system, port, loop)
    try:
        return await measure(opener(system, port), scale, server.pid, one_way_only=True)
    finally:
        server.kill()
        server.wait()


async def _zmq(port: int) -> Client:
    return ZmqClient(port)


#: Per loop, per system, per metric: the figure of every round.
Seen = dict[str, dict[str, dict[str, list[float]]]]


def new_loop(loop: str) -> asyncio.AbstractEventLoop:
    """A fresh event loop of the kind ``loop`` names."""
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def in_new_loop(loop: str, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in a fresh event loop of the kind ``loop`` names."""
    with asyncio.Runner(loop_factory=functools.partial(new_loop, loop)) as runner:
        return runner.run(work)


def run_rounds(loops: list[str], only: list[str] | None, rounds: int, scale: float
               ) -> Seen:
    """Every system once per round, in a rotating order, on each event loop.

    Other work on the machine comes and goes; interleaving the systems spreads it over
    all of them, and the median drops the rounds it hit hardest. Each system's one-way
    figures are measured in a loop of their own; then its round trips and requests in
    flight, in turns with the others'.
    """
    seen: Seen = {}
    for round_number in range(rounds):
        for loop in loops:
            systems = [s for s in SYSTEMS[loop] if not only or s in only]
            shift = round_number % len(systems)
            systems = systems[shift:] + systems[:shift]
            figures = {system: {} if ROUND_TRIPS_ONLY else
                       in_new_loop(loop, run_system(system, loop, scale))
                       for system in systems}
            for system, taken in in_new_loop(loop, in_turns(systems, loop, scale)).items():
                figures[system].update(taken)
            for system in SYSTEMS[loop]:
                if system not in figures:
                    continue
                print(f"[round {round_number + 1}] {system} on {loop}: " + ", ".join(
                    f"{k} {v:,.1f}" for k, v in figures[system].items()),
                    file=sys.stderr, flush=True)
                for metric, value in figures[system].items():
                    seen.setdefault(loop, {}).setdefault(system, {}).setdefault(
                        metric, []).append(value)
    return seen


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


def spread(values: list[float]) -> str:
    """The median of ``values`` with the lowest and highest in brackets (one: alone)."""
    ordered = sorted(values)
    median = f"{statistics.median(ordered):.2f}"
    return f"{median} [{ordered[0]:.2f}-{ordered[-1]:.2f}]" if len(ordered) > 1 else median


def ratio(seen: dict[str, dict[str, list[float]]], mine: str, base: str, metric: str
          ) -> str:
    """``mine / base`` for ``metric``: the median of the rounds' ratios, [lowest-highest]."""
    ratios = [a / b for a, b in zip(seen[mine][metric], seen[base][metric], strict=True) if b]
    return spread(ratios) if ratios else "-"


def table(seen: dict[str, dict[str, list[float]]], mine: str, bases: list[str],
          title: str) -> None:
    """``mine`` beside each of ``bases``: medians of the rounds, and the ratios."""
    bases = [b for b in bases if b in seen]
    if mine not in seen or not bases:
        return
    width = {name: max(14, len(name)) + 2 for name in [mine, *bases]}
    print(f"\n{title}")
    print(f"{'':32}{mine:>{width[mine]}}" + "".join(
        f"{b:>{width[b]}}{'ratio':>22}" for b in bases))
    for metric, values in seen[mine].items():
        print(f"{metric:32}{statistics.median(values):{width[mine]},.1f}" + "".join(
            f"{statistics.median(seen[b][metric]):{width[b]},.1f}"
            f"{ratio(seen, mine, b, metric):>22}" for b in bases))


def report(seen: Seen, rounds: int) -> None:
    print(f"{rounds} rounds; figures are medians; ratio = first system / the one before it, "
          "median of the rounds' ratios [lowest-highest round]")
    print("(for round trips and CPU per message lower is better: ratio < 1 is faster)")
    for loop in seen:
        table(seen[loop], "p2phost", ["raw", "zmq"], f"== {loop} event loop")
        table(seen[loop], "p2phost+noise", ["p2phost"],
              f"== {loop} event loop: noise-security beside plaintext p2phost")
    if "asyncio" in seen and "uvloop" in seen:
        both = {f"{s} on {loop}": seen[loop][s] for loop in ("uvloop", "asyncio")
                for s in ("p2phost", "raw") if s in seen[loop]}
        table(both, "p2phost on uvloop", ["p2phost on asyncio"],
              "== uvloop beside asyncio's own loop (p2phost)")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pin(cpu: int) -> None:
    """Client on CPU 0, servers on CPU 1 (or 0): every system gets the same placement
    (left to the scheduler, a round trip varies by 2x with where the two land). ``cpu``
    counts the CPUs the run's first process could use (``CPUS``), not this process's:
    a server inherits its client's affinity, CPU 0 alone."""
    cpus = [int(c) for c in os.environ.get(CPUS, "").split(",") if c]
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=["raw", "zmq", "p2phost", "p2phost+noise"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=LOOPS, action="append",
                        help="run on this event loop only (default: asyncio and uvloop)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--only", choices=SYSTEMS["asyncio"], action="append",
                        help="run only these systems")
    parser.add_argument("--round-trips", action="store_true",
                        help="only the request/reply workloads (round trips on two CPUs and "
                             "on one, requests in flight)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every system; the median is reported (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--profile", action="store_true",
                        help="profile p2phost's two nodes in one process instead")
    args = parser.parse_args()
    pin(args.cpu if args.serve else 0)
    loops = args.loop or list(LOOPS)
    if args.serve:
        server = {"raw": serve_raw, "zmq": serve_zmq, "p2phost": serve_p2phost,
                  "p2phost+noise": functools.partial(serve_p2phost, secure=True)}[args.serve]
        with asyncio.Runner(loop_factory=functools.partial(new_loop, loops[0])) as runner:
            runner.run(server(args.port))
        return
    scale = 0.1 if args.quick else 1.0
    global ROUND_TRIPS_ONLY
    ROUND_TRIPS_ONLY = args.round_trips
    if args.profile:
        asyncio.run(profile_p2phost(scale))
        return
    print(f"load average before: {load_average()}", flush=True)
    seen = run_rounds(loops, args.only, max(1, args.rounds), scale)
    print(f"load average after: {load_average()} "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    report(seen, max(1, args.rounds))
    if args.json:
        args.json.write_text(json.dumps(seen, indent=2) + "\n")


if __name__ == "__main__":
    main()
