"""Security through the node, beside plaintext, in one run: what a secured node pays.

Two real nodes (in one process, so each configuration gets the same CPU) exchange app
messages through the whole runtime: envelope, codec, mailbox, handler. For each medium:

* tcp (tcp-transport on 127.0.0.1): no security plugin, noise-security, tls-security;
* redis and postgresql (if the service runs on loopback): no security plugin, and a
  security plugin loaded, which seals every frame (signed, encrypted to the recipient).

Figures: one-way throughput (messages/s of a 64 B and an 8 KiB body, sent with
``send`` and counted by the receiving app) and request round trips (p50/p99 of
``request`` on an echo topic), each beside plaintext of the same medium with the ratio.
Run ``python benchmarks/security_nodes.py`` (``--quick``, ``--media tcp``, ``--json FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _plugin in ("noise-security", "tls-security", "tcp-transport", "json-codec",
                "redis-transport", "postgres-transport"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_postgres_transport import PostgresTransport  # noqa: E402
from p2phost_redis_transport import RedisTransport  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402
from p2phost_tls_security import TlsSecurity  # noqa: E402

from p2phost._runtime import Node, NodeOptions  # noqa: E402
from p2phost_sdk import App, Identity, Message, Security, Transport, handler  # noqa: E402

SIZES = {"64 B": 64, "8 KiB": 8192}
#: Messages per throughput run and round trips, by medium (a tenth with --quick).
COUNTS = {"tcp": (20_000, 2_000), "redis": (5_000, 1_000), "postgresql": (2_000, 300)}
MEDIA: dict[str, tuple[str, int, Callable[[str], Transport]]] = {
    "tcp": ("tcp://127.0.0.1:0", 0, lambda peer: TcpTransport()),
    "redis": ("redis://127.0.0.1:6379/0", 6379, lambda peer: RedisTransport(peer_id=peer)),
    "postgresql": ("postgresql://127.0.0.1:5432/test", 5432,
                   lambda peer: PostgresTransport(peer_id=peer)),
}
#: Security per medium: on inbox media any plugin turns sealing on ("sealed").
SECURITY: dict[str, dict[str, Callable[[], Security] | None]] = {
    "tcp": {"plaintext": None, "noise": NoiseSecurity, "tls": TlsSecurity},
    "redis": {"plaintext": None, "sealed": NoiseSecurity},
    "postgresql": {"plaintext": None, "sealed": NoiseSecurity},
}


class Sink(App):
    """Counts notes until it has the number it waits for; echoes requests."""

    name = "sink"

    def __init__(self) -> None:
        self.count, self.target = 0, 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.count, self.target = 0, count
        self.done.clear()

    @handler("note")
    async def note(self, message: Message) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        return message.body


def _node(medium: str, security: Callable[[], Security] | None, apps: list[App]) -> Node:
    url, _, make = MEDIA[medium]
    identity = Identity.generate()
    scheme = url.split(":", 1)[0]
    return Node(identity, transports={scheme: make(identity.peer_id)},
                codecs={"application/json": JsonCodec()},
                security=[security()] if security else [], apps=apps,
                options=NodeOptions(listen=[url] if apps else [], keepalive_interval=60,
                                    keepalive_timeout=120))


async def measure(medium: str, security: Callable[[], Security] | None, scale: float
                  ) -> dict[str, float]:
    """The figures of one configuration."""
    count, trips = (max(100, int(n * scale)) for n in COUNTS[medium])
    sink = Sink()
    server, client = _node(medium, security, [sink]), _node(medium, security, [])
    figures: dict[str, float] = {}
    async with server, client:
        peer = await client.connect(server.addresses[0])
        for label, size in SIZES.items():
            body = "x" * size
            sink.expect(count)
            started = time.perf_counter()
            for _ in range(count):
                await client.send(peer, "note", body)
            async with asyncio.timeout(600):
                await sink.done.wait()
            figures[f"msgs/s {label}"] = count / (time.perf_counter() - started)
        times = []
        for n in range(trips):
            started = time.perf_counter()
            await client.request(peer, "echo", n)
            times.append((time.perf_counter() - started) * 1e6)
        times.sort()
        figures["rtt p50 us"] = statistics.median(times)
        figures["rtt p99 us"] = times[int(len(times) * 0.99) - 1]
    return figures


def _up(port: int) -> bool:
    if not port:
        return True
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def report(results: dict[str, dict[str, dict[str, float]]]) -> None:
    """A table per medium: each security beside plaintext, with the ratio."""
    for medium, configs in results.items():
        base = configs["plaintext"]
        print(f"\n== {medium}")
        names = list(configs)
        print(f"{'':18}" + "".join(f"{n:>22}" for n in names))
        for key in base:
            cells = []
            for name in names:
                value = configs[name][key]
                ratio = value / base[key]
                cells.append(f"{value:>12,.0f}" + (f" ({ratio:4.2f}x)" if name != "plaintext"
                                                   else " " * 8))
            print(f"{key:18}" + "".join(f"{c:>22}" for c in cells))


async def run(media: list[str], scale: float) -> dict[str, dict[str, dict[str, float]]]:
    """Every configuration of every medium that is up, in one run."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for medium in media:
        if not _up(MEDIA[medium][1]):
            print(f"skipping {medium}: nothing listens on 127.0.0.1:{MEDIA[medium][1]}",
                  file=sys.stderr)
            continue
        results[medium] = {}
        for name, security in SECURITY[medium].items():
            print(f"{medium} {name}...", file=sys.stderr, flush=True)
            results[medium][name] = await measure(medium, security, scale)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--media", action="append", choices=list(MEDIA),
                        help="only these media (default: all that are up)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results = asyncio.run(run(args.media or list(MEDIA), 0.1 if args.quick else 1.0))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
