"""p2phost as a library beside the runtime node `p2phost run` builds, and its blocking API
beside pyzmq's blocking REQ/REP, in one run.

* ``open_node`` vs the runtime node: the workloads of benchmarks/messaging.py (one-way
  64 B / 1 KiB / 64 KiB, sequential round trips, 64 requests in flight) with a library
  node on both ends (server handlers registered with ``@node.handler``, the manifest's
  tcp-transport and msgpack-codec loaded from a plugin environment as in a project),
  against messaging.py's runtime nodes. They should be equal within noise.
* the blocking API: sequential request round trips from ``p2phost.connect(...)`` (the
  loop in a background thread, the caller blocked on each reply) to a library node,
  beside a blocking pyzmq REQ socket to a REP server.

Servers run in their own processes, pinned as in messaging.py. Run
``python benchmarks/library.py`` (``--quick`` for a short run). Report the load average
with the figures: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from messaging import (
    REPO,
    P2PClient,
    check_placement,
    free_port,
    measure,
    pin,
    start_server,
)

PLUGINS = ("tcp-transport", "msgpack-codec")


# -- a plugin environment, as a project has (built once per run) ---------------------------

def plugin_env(base: Path) -> Path:
    """``base/.p2phost`` with tcp-transport and msgpack-codec installed from their sources."""
    from p2phost._environment import PluginEnvironment
    from p2phost._wheel import unpack_wheel

    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels),
                    *(str(REPO / "official-plugins" / p) for p in PLUGINS)],
                   check=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    env = PluginEnvironment(base / ".p2phost")
    staged = env.stage()
    for wheel in wheels.glob("*.whl"):
        unpack_wheel(wheel, staged)
    env.commit(staged)
    return env.root


def state_dir(env: Path, name: str) -> Path:
    """A new state directory whose plugins are those of ``env``."""
    root = Path(tempfile.mkdtemp(prefix=f"p2phost-bench-{name}-"))
    (root / ".p2phost").mkdir()
    (root / ".p2phost" / "env").symlink_to(env, target_is_directory=True)
    return root


def manifest(listen: list[str]) -> dict[str, Any]:
    return {"node": {"name": "bench", "listen": listen}, "plugins": {p: "*" for p in PLUGINS}}


# -- servers ---------------------------------------------------------------------------------

async def serve_library(port: int, env: Path) -> None:
    """The messaging.py server's two topics, as handlers of a library node."""
    import p2phost

    node = p2phost.open_node(manifest=manifest([f"tcp://127.0.0.1:{port}"]),
                             state_dir=state_dir(env, "server"), control=False)
    handled = 0

    @node.handler("sink")
    async def sink(message: p2phost.Message) -> None:
        nonlocal handled
        handled += 1

    @node.handler("echo")
    async def echo(message: p2phost.Message) -> Any:
        return handled if message.body == b"count" else message.body

    async with node:
        print("ready", flush=True)
        await asyncio.Event().wait()


def serve_zmq_rep(port: int) -> None:
    """A blocking REP socket that echoes."""
    import zmq

    context = zmq.Context()
    socket = context.socket(zmq.REP)
    socket.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    while True:
        socket.send(socket.recv())


def start(kind: str, port: int, env: Path | None = None, cpu: int = 1
          ) -> subprocess.Popen[str]:
    if kind == "p2phost":  # messaging.py's runtime node, on the loop the library's get
        return start_server("p2phost", port, "asyncio", cpu)
    args = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--cpu", str(cpu)]
    if env is not None:
        args += ["--env", str(env)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit(f"the {kind} server did not start")
    check_placement(process.pid, cpu)
    return process


# -- clients ---------------------------------------------------------------------------------

class LibraryClient(P2PClient):
    """messaging.py's p2phost client, its node opened with ``open_node``."""

    @classmethod
    async def open_library(cls, port: int, env: Path) -> LibraryClient:
        import p2phost

        node = p2phost.open_node(manifest=manifest([]), state_dir=state_dir(env, "client"),
                                 control=False)
        await node.open()
        return cls(node, await node.connect(f"tcp://127.0.0.1:{port}"))


def blocking_p2phost(port: int, env: Path, count: int) -> float:
    """p50 (us) of sequential blocking requests through ``p2phost.connect``."""
    import p2phost

    with p2phost.connect(manifest=manifest([]), state_dir=state_dir(env, "blocking"),
                         control=False) as node:
        peer = node.connect(f"tcp://127.0.0.1:{port}")
        body = os.urandom(64)
        return _p50(lambda: node.request(peer, "echo", body), body, count)


def blocking_zmq(port: int, count: int) -> float:
    """p50 (us) of sequential requests on a blocking pyzmq REQ socket."""
    import zmq

    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.connect(f"tcp://127.0.0.1:{port}")
    body = os.urandom(64)

    def ask() -> bytes:
        socket.send(body)
        reply: bytes = socket.recv()
        return reply

    try:
        return _p50(ask, body, count)
    finally:
        socket.close(linger=0)
        context.term()


def _p50(ask: Any, body: bytes, count: int) -> float:
    for _ in range(min(500, count)):  # warm up
        ask()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert ask() == body
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


# -- rounds ----------------------------------------------------------------------------------

async def run_async(kind: str, env: Path, scale: float) -> dict[str, float]:
    port = free_port()
    server = start(kind if kind != "runtime" else "p2phost", port, env)
    try:
        if kind == "runtime":
            return await measure(lambda: P2PClient.open(port), scale, server.pid)
        return await measure(lambda: LibraryClient.open_library(port, env), scale, server.pid)
    finally:
        server.kill()
        server.wait()


def run_blocking(kind: str, env: Path, count: int) -> float:
    port = free_port()
    server = start("library" if kind == "p2phost" else "zmq-rep", port, env, cpu=1)
    try:
        if kind == "p2phost":
            return blocking_p2phost(port, env, count)
        return blocking_zmq(port, count)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=["library", "zmq-rep"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--env", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every system; the median is reported (default 3)")
    args = parser.parse_args()
    pin(args.cpu if args.serve else 0)
    if args.serve == "library":
        assert args.env is not None
        asyncio.run(serve_library(args.port, args.env))
        return
    if args.serve == "zmq-rep":
        serve_zmq_rep(args.port)
        return
    scale = 0.1 if args.quick else 1.0
    env = plugin_env(Path(tempfile.mkdtemp(prefix=f"p2phost-bench-{uuid.uuid4().hex[:6]}-")))
    seen: dict[str, dict[str, list[float]]] = {"library": {}, "runtime": {}}
    blocking: dict[str, list[float]] = {"p2phost": [], "zmq": []}
    count = max(1000, int(10_000 * scale))
    for round_number in range(max(1, args.rounds)):
        order = ["library", "runtime"] if round_number % 2 == 0 else ["runtime", "library"]
        for kind in order:
            figures = asyncio.run(run_async(kind, env, scale))
            print(f"[round {round_number + 1}] {kind}: " + ", ".join(
                f"{k} {v:,.0f}" for k, v in figures.items()), file=sys.stderr, flush=True)
            for metric, value in figures.items():
                seen[kind].setdefault(metric, []).append(value)
        for kind in (["p2phost", "zmq"] if round_number % 2 == 0 else ["zmq", "p2phost"]):
            blocking[kind].append(run_blocking(kind, env, count))
            print(f"[round {round_number + 1}] blocking {kind}: p50 {blocking[kind][-1]:,.0f} us",
                  file=sys.stderr, flush=True)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':34}{'open_node':>14}{'runtime node':>14}{'ratio':>8}")
    for metric, values in seen["library"].items():
        mine, base = statistics.median(values), statistics.median(seen["runtime"][metric])
        print(f"{metric:34}{mine:14,.0f}{base:14,.0f}{mine / base:8.2f}")
    mine, base = statistics.median(blocking["p2phost"]), statistics.median(blocking["zmq"])
    print(f"{'blocking round trip p50 (us)':34}{mine:14,.0f}{'pyzmq REQ/REP':>14}"
          f"{base:8,.0f}  ratio {mine / base:.2f}")
    print("ratio = p2phost / baseline (round trips: lower is better)")


if __name__ == "__main__":
    main()
