"""Acknowledged delivery beside at-most-once, on every medium, in one run.

For each medium (tcp, redis, nats with JetStream, mqtt, amqp, postgresql) a receiver
node runs in a separate process and a sender node here; both keep their delivery
database on disk (a temp dir), as ``p2phost run`` does. The sender sends N messages
one after another (``await send`` each time, as an app would), on a topic of each mode:

* ``at-most-once``: timed until the receiver answers a request sent after them (it
  handles a peer's messages in order, so the answer means all were handled);
* ``at-least-once`` and ``effectively-once``: timed until the sender's outbox is empty,
  i.e. every message was handled and acknowledged (the effectively-once handler also
  commits its dedupe mark and a store write per message).

The acknowledged modes run a second time with the same messages sent by ``SENDERS``
tasks at once (each awaiting its own sends, as concurrent handlers or clients would):
their sends share commits (group commit), which one sequential sender cannot, since
each ``send()`` returns only once its message is committed.

It prints messages/s per mode and the ratio to at-most-once on the same medium, and
each round the CPU time per message of the sender and the receiver process in each mode
(one sender): on a loaded machine those compare where the rates swing. Run
``python benchmarks/delivery.py`` (``--quick`` for a short run, ``--only tcp`` for one
medium, ``--json FILE`` to keep the figures). Media whose service is down are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OFFICIAL = REPO / "official-plugins"
# name -> (plugin, listen URL, plugin config, service port)
MEDIA: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "tcp": ("tcp-transport", "tcp://127.0.0.1:0", {}, 0),
    "redis": ("redis-transport", "redis://127.0.0.1:6379/0", {}, 6379),
    "nats": ("nats-transport", "nats://127.0.0.1:4222", {"durable": True}, 4222),
    "mqtt": ("mqtt-transport", "mqtt://127.0.0.1:1883", {}, 1883),
    "amqp": ("amqp-transport", "amqp://guest:guest@127.0.0.1:5672/", {}, 5672),
    "postgresql": ("postgres-transport", "postgresql://127.0.0.1:5432/test", {}, 5432),
}
MODES = ("at-most-once", "at-least-once", "effectively-once")
#: Concurrent senders in the second run of the acknowledged modes.
SENDERS = 16
#: Each run: (label, mode, concurrent senders).
RUNS = (*((mode, mode, 1) for mode in MODES),
        *((f"{mode} x{SENDERS}", mode, SENDERS) for mode in MODES[1:]))
TOPICS = {"at-most-once": "amo", "at-least-once": "alo", "effectively-once": "eo"}
BODY = {"payload": "x" * 40}  # about 64 bytes encoded


def make_node(medium: str, state: Path, apps: list[Any], listen: bool) -> Any:
    """A node over ``medium`` with the JSON codec, its delivery database under ``state``."""
    from p2phost._runtime import Node, NodeOptions
    from p2phost_sdk import Identity, PluginContext, PluginMetadata

    plugin, url, config, _ = MEDIA[medium]
    for name in (plugin, "json-codec"):
        sys.path.insert(0, str(OFFICIAL / name / "src"))
    module = importlib.import_module("p2phost_" + plugin.replace("-", "_"))
    from p2phost_json_codec import JsonCodec

    identity = Identity.generate()
    metadata = PluginMetadata.from_pyproject(OFFICIAL / plugin / "pyproject.toml")
    context = PluginContext(plugin, metadata.config.validate(config, plugin), identity.peer_id,
                            state / "plugin")
    transports = {s: t for t in module.p2phost_transports(context) for s in t.schemes}
    return Node(identity, transports=transports, codecs={"application/json": JsonCodec()},
                apps=apps, options=NodeOptions(listen=[url] if listen else [],
                                               state_dir=state, drain_timeout=5.0))


def sink() -> Any:
    """The receiving app: one handler per mode, counting; ``count`` answers how many."""
    from p2phost_sdk import App, Message, handler

    class Sink(App):
        name = "sink"
        handled = 0

        @handler("amo")
        async def amo(self, message: Message) -> None:
            self.handled += 1

        @handler("alo", delivery="at-least-once")
        async def alo(self, message: Message) -> None:
            self.handled += 1

        @handler("eo", delivery="effectively-once")
        async def eo(self, message: Message) -> None:
            assert message.store is not None
            self.handled += 1
            message.store.put("handled", self.handled)

        @handler("count")
        async def count(self, message: Message) -> int:
            return self.handled

    return Sink()


async def serve(medium: str, state: Path) -> None:
    """The receiver process: prints its address, runs until stdin closes."""
    node = make_node(medium, state, [sink()], listen=True)
    async with node:
        print(node.addresses[0], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


LAGS: list[float] = []


async def lag_probe(stop: asyncio.Event) -> None:
    """The sender's event-loop lag: how late a 1 ms sleep wakes, while the modes run."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        LAGS.append(loop.time() - before - 0.001)


async def one_mode(node: Any, peer: str, mode: str, count: int, senders: int = 1) -> float:
    """Messages/s of ``count`` sends on the topic of ``mode`` by ``senders`` tasks at once,
    handled (and acknowledged)."""
    before = await node.request(peer, "count", None, timeout=60)
    topic = TOPICS[mode]

    async def sender(share: int) -> None:
        for _ in range(share):
            await node.send(peer, topic, BODY)

    started = time.perf_counter()
    await asyncio.gather(*(sender(count // senders + (n < count % senders))
                           for n in range(senders)))
    if mode == "at-most-once":
        handled = await node.request(peer, "count", None, timeout=300)
        assert handled - before == count, f"{handled - before} of {count} handled"
    else:
        left = await node.delivery.settle(300)
        assert left == 0, f"{left} of {count} not acknowledged"
    return count / (time.perf_counter() - started)


async def run_medium(medium: str, count: int, rounds: int) -> dict[str, float]:
    """The median messages/s of each mode on ``medium``."""
    with tempfile.TemporaryDirectory(prefix="p2phost-bench-") as tmp:
        server = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", medium, "--state", f"{tmp}/receiver",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert server.stdin is not None and server.stdout is not None
        try:
            address = (await asyncio.wait_for(server.stdout.readline(), 60)).decode().strip()
            if not address:
                raise RuntimeError(f"the {medium} receiver did not start")
            node = make_node(medium, Path(tmp) / "sender", [], listen=False)
            async with node:
                peer = await node.connect(address)
                await one_mode(node, peer, "at-least-once", min(count, 200))  # warm up
                figures: dict[str, list[float]] = {label: [] for label, _, _ in RUNS}
                stop = asyncio.Event()
                probe = asyncio.create_task(lag_probe(stop))
                for number in range(rounds):
                    cpu: list[str] = []
                    for label, mode, senders in RUNS:
                        before = time.process_time(), process_cpu(server.pid)
                        figures[label].append(await one_mode(node, peer, mode, count, senders))
                        if senders == 1:
                            cpu.append(f"{mode} {cpu_per_message(before, server.pid, count)}")
                    print(f"  [{medium} round {number + 1}] " + ", ".join(
                        f"{label} {figures[label][-1]:,.0f}/s" for label, _, _ in RUNS),
                        flush=True)
                    print("    CPU per message, sender/receiver: " + ", ".join(cpu),
                          flush=True)
                stop.set()
                await probe
        finally:
            server.stdin.close()
            try:
                await asyncio.wait_for(server.wait(), 30)
            except TimeoutError:
                server.kill()
                await server.wait()
    return {mode: statistics.median(values) for mode, values in figures.items()}


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) the process ``pid`` used so far (Linux /proc; 0
    elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_message(before: tuple[float, float], receiver: int, count: int) -> str:
    """The sender's (this process) and the receiver's CPU per message since ``before``,
    in microseconds (the receiver's to the clock tick: 10 ms over ``count``)."""
    sender = (time.process_time() - before[0]) / count * 1e6
    other = (process_cpu(receiver) - before[1]) / count * 1e6
    return f"{sender:.1f}/{other:.1f} us"


def service_up(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (0: no service needed)."""
    if not port:
        return True
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def report(results: dict[str, dict[str, float]]) -> None:
    """One row per medium: messages/s of each mode, and the ratios to at-most-once (one
    sender, then ``SENDERS`` at once)."""
    x = f"x{SENDERS}"
    print(f"\n{'medium':<11}{'at-most-once':>14}{'at-least-once':>15}{'effectively-once':>18}"
          f"{'alo/amo':>9}{'eo/amo':>8}{'alo' + x + '/amo':>13}{'eo' + x + '/amo':>12}")
    for medium, figures in results.items():
        amo, alo, eo = (figures[m] for m in MODES)
        alo_n, eo_n = (figures[f"{m} {x}"] for m in MODES[1:])
        print(f"{medium:<11}{amo:>12,.0f}/s{alo:>13,.0f}/s{eo:>16,.0f}/s"
              f"{alo / amo:>9.2f}{eo / amo:>8.2f}{alo_n / amo:>13.2f}{eo_n / amo:>12.2f}")
    if LAGS:
        lags = sorted(LAGS)
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        print(f"sender's loop lag under load: p50 {lags[len(lags) // 2] * 1000:.2f} ms, "
              f"p99 {p99 * 1000:.2f} ms, max {lags[-1] * 1000:.1f} ms ({len(lags):,} probes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=list(MEDIA), help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--only", choices=list(MEDIA), action="append",
                        help="run only these media")
    parser.add_argument("--count", type=int, default=10_000,
                        help="messages per mode and round (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per medium; the median is reported (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.state))
        return
    count = max(100, args.count // 10 if args.quick else args.count)
    results: dict[str, dict[str, float]] = {}
    for medium in args.only or list(MEDIA):
        if not service_up(MEDIA[medium][3]):
            print(f"skipping {medium}: nothing listens on 127.0.0.1:{MEDIA[medium][3]}")
            continue
        print(f"{medium}: {count:,} messages per mode, {args.rounds} rounds", flush=True)
        results[medium] = asyncio.run(run_medium(medium, count, max(1, args.rounds)))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.path[:0] = [str(REPO / "host"), str(REPO / "sdk")]
    main()
