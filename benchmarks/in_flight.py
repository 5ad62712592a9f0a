"""Requests in flight: p2phost beside raw asyncio streams at several depths, with how
busy each side's CPU was.

``benchmarks/messaging.py`` measures 64 requests in flight; this runs the same
workload (its servers, clients and ``in_flight``) at 16, 64 and 256 in flight and
prints, beside requests/s, each side's CPU time per request and the share of the
wall-clock time its CPU was busy (server: ``/proc/PID/schedstat``; client: its
process time). Throughput with requests in flight is a pipeline: when one side
waits for the other's batch, both CPUs idle part of the time, and an idle vCPU costs
the VM a wake-up; "busy" tells a side that is slow from one that waits.

Run ``python benchmarks/in_flight.py`` (``--loop uvloop``, ``--depth 64``, ``--rounds``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import messaging as m

SYSTEMS = ("p2phost", "raw")


async def measure(system: str, loop: str, depth: int, count: int) -> dict[str, float]:
    """One system at one depth: requests/s, CPU per request and busy share, each side."""
    port = m.free_port()
    server = m.start_server(system, port, loop)
    try:
        client = await m.opener(system, port)()
        await m.in_flight(client, 64 * depth, depth)  # warm up
        served, mine = m.cpu_seconds(server.pid), time.process_time()
        started = time.perf_counter()
        rate = await m.in_flight(client, count, depth)
        wall = time.perf_counter() - started
        served, mine = m.cpu_seconds(server.pid) - served, time.process_time() - mine
        await client.close()
    finally:
        server.kill()
        server.wait()
    done = count // depth * depth
    return {"requests/s": rate,
            "server CPU per request (us)": served / done * 1e6,
            "server busy (%)": served / wall * 100,
            "client CPU per request (us)": mine / done * 1e6,
            "client busy (%)": mine / wall * 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=m.LOOPS, default="asyncio")
    parser.add_argument("--depth", type=int, action="append",
                        help="requests in flight (default: 16, 64 and 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=256_000, help="requests per measure")
    args = parser.parse_args()
    m.pin(0)
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for depth in args.depth or [16, 64, 256]:
        seen: dict[str, list[dict[str, float]]] = {system: [] for system in SYSTEMS}
        for _ in range(args.rounds):
            for system in SYSTEMS:
                seen[system].append(asyncio.run(measure(system, args.loop, depth, args.count)))
        print(f"\n== {depth} requests in flight, {args.loop} loop ({args.rounds} rounds: "
              "median [lowest-highest])")
        print(f"{'':32}" + "".join(f"{system:>28}" for system in SYSTEMS))
        for figure in seen[SYSTEMS[0]][0]:
            cells = []
            for system in SYSTEMS:
                values = [round_[figure] for round_ in seen[system]]
                digits = 0 if min(values) >= 1000 else 1
                cells.append(f"{statistics.median(values):,.{digits}f} "
                             f"[{min(values):,.{digits}f}-{max(values):,.{digits}f}]")
            print(f"{figure:32}" + "".join(f"{cell:>28}" for cell in cells))
        ratios = [p["requests/s"] / r["requests/s"]
                  for p, r in zip(seen["p2phost"], seen["raw"], strict=True)]
        print(f"{'requests/s, p2phost / raw':32}{m.spread(ratios):>28}")
    print(f"\nload average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
