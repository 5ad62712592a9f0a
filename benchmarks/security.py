"""Channel security beside plaintext, in one run: what noise and tls cost.

By default everything runs over the SDK's in-memory pipe, so the figures are the cost of
the security layer itself (handshake, encryption, framing) with no socket in the way;
``--medium tcp`` runs the same over tcp-transport on 127.0.0.1, as a node would:

* handshakes/s, one after the other (plaintext: a hello exchange of peer ids, what a
  node without a security plugin does);
* one-way throughput (frames/s and MB/s) for 64 B, 1 KiB and 64 KiB frames, sent one
  ``send`` at a time and in ``send_many`` batches of 64 (what a busy node does);
* round trips of a 64 B frame, one at a time (p50 and p99).

Each figure is printed beside plaintext's and as the ratio security/plaintext. Run
``python benchmarks/security.py`` (``--quick`` for a short run, ``--json FILE`` to keep
the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _plugin in ("noise-security", "tls-security", "tcp-transport"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402
from p2phost_tls_security import TlsSecurity  # noqa: E402

from p2phost_sdk import Connection, Identity, Security  # noqa: E402
from p2phost_sdk.testing import memory_pipe  # noqa: E402

SIZES = {"64 B": 64, "1 KiB": 1024, "64 KiB": 65536}
#: Frames sent per throughput run, by frame size (divided by 10 with --quick).
COUNTS = {64: 200_000, 1024: 100_000, 65536: 4_000}
BATCH = 64
ALICE, BOB = Identity.generate(), Identity.generate()

Pair = tuple[Connection, Connection]
Opener = Callable[[], Awaitable[Pair]]


async def memory_medium() -> Pair:
    """Two ends of an in-memory pipe."""
    return memory_pipe()


class TcpMedium:
    """Connections over tcp-transport on loopback: dialled end, accepted end."""

    def __init__(self) -> None:
        self.transport = TcpTransport()
        self.accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def __aenter__(self) -> TcpMedium:
        async def accept(connection: Connection) -> None:
            await self.accepted.put(connection)

        self.listener = await self.transport.listen("tcp://127.0.0.1:0", accept)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.listener.close()

    async def __call__(self) -> Pair:
        dialled = await self.transport.dial(self.listener.addresses[0], timeout=10)
        return dialled, await asyncio.wait_for(self.accepted.get(), 10)


def opener(security: Callable[[], Security] | None, medium: Opener) -> Opener:
    """Opens a connected pair over ``medium``, secured by ``security`` if given."""
    async def plaintext() -> Pair:
        a, b = await medium()
        # What a node without security does instead: each side names itself.
        await a.send(ALICE.peer_id.encode())
        await b.send(BOB.peer_id.encode())
        await a.recv()
        await b.recv()
        return a, b

    async def secured() -> Pair:
        assert security is not None
        a, b = await medium()
        alice, bob = await asyncio.gather(
            security().secure(a, identity=ALICE, initiator=True,
                              expected_peer_id=BOB.peer_id, timeout=10),
            security().secure(b, identity=BOB, initiator=False,
                              expected_peer_id=None, timeout=10))
        return alice, bob

    return plaintext if security is None else secured


def reusing(make: Callable[[], Security]) -> Callable[[], Security]:
    """One instance per side, as in a node (it caches its keys and contexts)."""
    instance = make()
    return lambda: instance


async def handshakes_per_second(open_pair: Opener, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        a, b = await open_pair()
        await a.close()
        await b.close()
    return count / (time.perf_counter() - start)


async def one_way(open_pair: Opener, size: int, count: int, batch: int) -> float:
    """Frames/s from one side to the other."""
    sender, receiver = await open_pair()
    frame = bytes(size)

    async def receive() -> None:
        for _ in range(count):
            await receiver.recv()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(receive())
        if batch == 1:
            for _ in range(count):
                await sender.send(frame)
        else:
            frames = [frame] * batch
            for _ in range(count // batch):
                await sender.send_many(frames)
    elapsed = time.perf_counter() - start
    await sender.close()
    await receiver.close()
    return count / elapsed


async def round_trips(open_pair: Opener, count: int) -> tuple[float, float]:
    """p50 and p99 of 64 B round trips, in microseconds."""
    alice, bob = await open_pair()
    frame = bytes(64)

    async def echo() -> None:
        for _ in range(count):
            await bob.send(await bob.recv())

    times: list[float] = []
    async with asyncio.TaskGroup() as group:
        group.create_task(echo())
        for _ in range(count):
            start = time.perf_counter()
            await alice.send(frame)
            await alice.recv()
            times.append(time.perf_counter() - start)
    await alice.close()
    await bob.close()
    cuts = statistics.quantiles(times, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


async def measure(quick: bool, medium: str) -> dict[str, dict[str, float]]:
    if medium == "tcp":
        async with TcpMedium() as tcp:
            return await measure_over(tcp, 10 if quick else 1)
    return await measure_over(memory_medium, 10 if quick else 1)


async def measure_over(medium: Opener, scale: int) -> dict[str, dict[str, float]]:
    systems: dict[str, Opener] = {
        "plaintext": opener(None, medium),
        "noise": opener(reusing(NoiseSecurity), medium),
        "tls": opener(reusing(TlsSecurity), medium),
    }
    results: dict[str, dict[str, float]] = {name: {} for name in systems}
    for name, open_pair in systems.items():
        figures = results[name]
        figures["handshakes/s"] = await handshakes_per_second(open_pair, 2000 // scale)
        for label, size in SIZES.items():
            count = COUNTS[size] // scale
            for batch in (1, BATCH):
                rate = await one_way(open_pair, size, count - count % batch, batch)
                mode = "send" if batch == 1 else f"send_many({batch})"
                figures[f"{label} {mode} frames/s"] = rate
                figures[f"{label} {mode} MB/s"] = rate * size / 1e6
        p50, p99 = await round_trips(open_pair, 20_000 // scale)
        figures["64 B round trip p50 us"] = p50
        figures["64 B round trip p99 us"] = p99
        print(f"measured {name}", file=sys.stderr, flush=True)
    return results


def report(results: dict[str, dict[str, float]]) -> None:
    base = results["plaintext"]
    print(f"{'figure':<34}{'plaintext':>13}{'noise':>13}{'tls':>13}"
          f"{'noise/plain':>13}{'tls/plain':>11}")
    for figure, plain in base.items():
        noise, tls = results["noise"][figure], results["tls"][figure]
        print(f"{figure:<34}{plain:>13,.0f}{noise:>13,.0f}{tls:>13,.0f}"
              f"{noise / plain:>13.2f}{tls / plain:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (10x fewer frames)")
    parser.add_argument("--medium", choices=["memory", "tcp"], default="memory",
                        help="what carries the frames (default: an in-memory pipe)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results: dict[str, Any] = asyncio.run(measure(args.quick, args.medium))
    print(f"over {args.medium}" + (" (quick)" if args.quick else ""))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
