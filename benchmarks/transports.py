"""The stream transports beside raw asyncio streams and tcp-transport, in one run.

Each system runs its server in a separate process and its client here, on 127.0.0.1,
at the transport level (the SDK's Connection API: frames in, frames out):

* raw asyncio: length-prefixed frames over asyncio streams (``readexactly``), the baseline;
* tcp: tcp-transport; quic: quic-transport (aioquic); websocket: websocket-transport;
* each of the three again with noise-security on top, as a node runs them.

Measured for each: connection set-up (dial until the first reply arrived: a dialled
connection a node can use; with noise, its handshake included), one-way frames/s of
64 B and 1 KiB (the client sends N frames, then asks how many arrived), and the round
trip of a 64 B request (p50). Every system once per round in a rotating order, the
median of the rounds. Run ``python benchmarks/transports.py`` (``--quick`` for a short
run, ``--json FILE`` to keep the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _plugin in ("tcp-transport", "quic-transport", "websocket-transport", "noise-security"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))
sys.path.insert(0, str(REPO / "sdk"))

from p2phost_sdk import Connection, Identity, Transport  # noqa: E402

LENGTH = struct.Struct("!I")
SYSTEMS = ["raw", "tcp", "quic", "websocket", "tcp+noise", "quic+noise", "websocket+noise"]
SIZES = {"64 B": 64, "1 KiB": 1024}
SERVER_ID = Identity.generate()
TIMEOUT = 30.0


def make_transport(system: str) -> tuple[Transport, str]:
    """The transport of ``system`` and the address its server listens on."""
    medium = system.split("+")[0]
    if medium == "tcp":
        from p2phost_tcp_transport import TcpTransport
        return TcpTransport(), "tcp://127.0.0.1:{port}"
    if medium == "quic":
        from p2phost_quic_transport import QuicTransport
        return QuicTransport(), "quic://127.0.0.1:{port}"
    from p2phost_websocket_transport import WebSocketTransport
    return WebSocketTransport(proxy=""), "ws://127.0.0.1:{port}"


async def secure(system: str, connection: Connection, identity: Identity,
                 initiator: bool) -> Connection:
    """``connection`` with noise-security on it when ``system`` asks for it."""
    if not system.endswith("+noise"):
        return connection
    from p2phost_noise_security import NoiseSecurity
    return await NoiseSecurity().secure(connection, identity=identity, initiator=initiator,
                                        expected_peer_id=None, timeout=TIMEOUT)


# -- servers (each runs in its own process) ---------------------------------------------
# Frames: b"o" + body (one-way, counted), b"r" + body (echoed), b"c" (answers the count).

async def serve(system: str, port: int) -> None:
    """Serve ``system`` on ``port`` until killed."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(connection: Connection) -> None:
        connection = await secure(system, connection, SERVER_ID, initiator=False)
        handled = 0
        try:
            while True:
                frame = await connection.recv()
                kind = frame[:1]
                if kind == b"o":
                    handled += 1
                elif kind == b"r":
                    await connection.send(frame)
                else:
                    await connection.send(str(handled).encode())
                    handled = 0
        except Exception:
            await connection.close()

    async def accept(connection: Connection) -> None:
        task = asyncio.ensure_future(handle(connection))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if system == "raw":
        await serve_raw(port)
        return
    transport, address = make_transport(system)
    await transport.listen(address.format(port=port), accept)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def serve_raw(port: int) -> None:
    """The same protocol on plain asyncio streams."""
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handled = 0
        try:
            while True:
                (size,) = LENGTH.unpack(await reader.readexactly(4))
                frame = await reader.readexactly(size)
                if frame[:1] == b"o":
                    handled += 1
                    continue
                reply = frame if frame[:1] == b"r" else str(handled).encode()
                handled = 0 if frame[:1] == b"c" else handled
                writer.write(LENGTH.pack(len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# -- clients ----------------------------------------------------------------------------

class RawConnection(Connection):
    """The baseline's client end, with the Connection API the workloads use."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, frame: bytes) -> None:
        self.writer.write(LENGTH.pack(len(frame)) + frame)
        await self.writer.drain()

    async def recv(self) -> bytes:
        (size,) = LENGTH.unpack(await self.reader.readexactly(4))
        return await self.reader.readexactly(size)

    async def close(self) -> None:
        self.writer.close()


async def dial(system: str, port: int) -> tuple[Connection, Transport | None]:
    """A usable client connection to the server of ``system`` (with noise if asked)."""
    if system == "raw":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return RawConnection(reader, writer), None
    transport, address = make_transport(system)
    connection = await transport.dial(address.format(port=port), timeout=TIMEOUT)
    return await secure(system, connection, Identity.generate(), initiator=True), transport


async def set_up(system: str, port: int, count: int) -> float:
    """Median milliseconds from dialling to the first reply on the new connection."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection, transport = await dial(system, port)
        await connection.send(b"r")
        await connection.recv()
        times.append((time.perf_counter() - started) * 1000)
        await connection.close()
        if transport is not None:
            await transport.close()
    return statistics.median(times)


async def one_way(connection: Connection, size: int, count: int) -> float:
    """Frames/s: ``count`` frames of ``size`` bytes, then the server's count of them."""
    frame = b"o" + bytes(size - 1)
    started = time.perf_counter()
    for _ in range(count):
        await connection.send(frame)
    await connection.send(b"c")
    got = int(await connection.recv())
    elapsed = time.perf_counter() - started
    assert got == count, f"the server counted {got} of {count} frames"
    return count / elapsed


async def round_trip(connection: Connection, count: int) -> float:
    """p50 microseconds of a 64 B request answered by the server."""
    frame = b"r" + bytes(63)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await connection.send(frame)
        await connection.recv()
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


async def measure(system: str, port: int, scale: float) -> dict[str, float]:
    figures = {"set-up (ms)": await set_up(system, port, max(5, int(40 * scale)))}
    connection, transport = await dial(system, port)
    try:
        await one_way(connection, 64, 2000)  # warm up
        for label, size in SIZES.items():
            figures[f"one-way {label} (msg/s)"] = await one_way(
                connection, size, max(2000, int(40_000 * scale)))
        figures["round trip p50 (us)"] = await round_trip(connection, max(300, int(3000 * scale)))
    finally:
        await connection.close()
        if transport is not None:
            await transport.close()
    return figures


def start_server(system: str, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve", system, "--port",
                                str(port)], stdout=subprocess.PIPE, text=True,
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


async def run_system(system: str, scale: float) -> dict[str, float]:
    port = free_port()
    server = start_server(system, port)
    try:
        async with asyncio.timeout(600):
            return await measure(system, port, scale)
    finally:
        server.kill()
        server.wait()


async def run_rounds(systems: list[str], rounds: int, scale: float
                     ) -> dict[str, dict[str, float]]:
    """Every system once per round, in a rotating order; the median of the rounds."""
    seen: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
    for number in range(rounds):
        shift = number % len(systems)
        for system in systems[shift:] + systems[:shift]:
            figures = await run_system(system, scale)
            print(f"[round {number + 1}] {system}: " + ", ".join(
                f"{k} {v:,.1f}" for k, v in figures.items()), file=sys.stderr, flush=True)
            for metric, value in figures.items():
                seen[system].setdefault(metric, []).append(value)
    return {s: {m: statistics.median(v) for m, v in metrics.items()}
            for s, metrics in seen.items()}


def report(results: dict[str, dict[str, float]]) -> None:
    """Each system's figures and its ratios to raw asyncio and to tcp (with noise: to
    tcp+noise)."""
    metrics = list(next(iter(results.values())))
    for metric in metrics:
        print(f"== {metric}")
        print(f"{'':18}{'value':>14}{'/ raw':>9}{'/ tcp':>9}")
        for system, figures in results.items():
            value = figures[metric]
            raw = results.get("raw", {}).get(metric)
            tcp = results.get("tcp+noise" if system.endswith("+noise") else "tcp", {}).get(metric)
            print(f"{system:18}{value:14,.1f}" + (f"{value / raw:9.2f}" if raw else f"{'':9}")
                  + (f"{value / tcp:9.2f}" if tcp else ""))
    print("/ tcp: beside tcp-transport with the same security (lower is better for set-up and "
          "round trip, higher for msg/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a tenth of the work")
    parser.add_argument("--only", choices=SYSTEMS, action="append", help="run only these")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every system; the median is reported (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port))
        return
    systems = args.only or SYSTEMS
    results: dict[str, Any] = asyncio.run(
        run_rounds(systems, args.rounds, 0.1 if args.quick else 1.0))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()


