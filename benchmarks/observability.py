"""What seeing a node costs: p2phost messaging with metrics on, with tracing on (100 %
sampled), and with both off, in one run.

The server node runs in its own process, the client node here, over tcp-transport and
msgpack-codec on 127.0.0.1 (as benchmarks/messaging.py). Per configuration:

* one-way messages/s (64 B bodies), until the server has handled them all;
* sequential request/reply round trips (p50, microseconds), requests/s, and the CPU
  microseconds per request of both processes (as for one-way, spans exported).

``sampled``: tracing with OTEL_TRACES_SAMPLER=parentbased_traceidratio at 0.01.
``metrics``: both nodes serve /metrics (``[metrics] listen``) and a scraper reads the
server's every second (Prometheus usually scrapes every 15 s). ``tracing``: both nodes
trace every message (OTEL_TRACES_EXPORTER=jsonl, the default parent-based always-on
sampler), spans batched to a file. Each configuration runs once per round, in a rotating
order; the median of the rounds is reported beside ``off`` as a ratio. The aims (issue
20): metrics cost <= 5 %, tracing <= 30 %. Run ``python benchmarks/observability.py``
(``--quick`` for a short run).

What is measured: ``one-way CPU us/msg`` is the CPU time (``time.process_time``: every
thread of the process) of both nodes over the burst, divided by the messages, after each
node has exported the spans it queued (the exporter thread's JSON and file writes are
in it); ``request CPU us/req`` the same over the sequential requests. The rates and
round trips are wall time, which does not wait for the exporter thread. ``spans
dropped``: spans both nodes dropped because their exporter fell behind (their export is
then not paid for; 0 means every span was written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from messaging import bench_app, free_port  # also puts the plugins on sys.path

CONFIGS = ("off", "metrics", "tracing", "sampled")
TRACE_ENV = {"OTEL_TRACES_EXPORTER": "jsonl", "OTEL_TRACES_SAMPLER": "parentbased_always_on",
             # Room for a burst: a dropped span would not be paid for.
             "OTEL_BSP_MAX_QUEUE_SIZE": "262144"}
#: ``sampled``: tracing with one trace in a hundred recorded, as docs/operations.md advises.
SAMPLED_ENV = {**TRACE_ENV, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
               "OTEL_TRACES_SAMPLER_ARG": "0.01"}


def make_node(config: str, port: int | None, apps: list[Any]) -> Any:
    from p2phost_msgpack_codec import MsgpackCodec
    from p2phost_tcp_transport import TcpTransport

    from p2phost._observability import MetricsSettings
    from p2phost._runtime import Node, NodeOptions
    from p2phost_sdk import Identity

    metrics = MetricsSettings(listen="127.0.0.1:0" if config == "metrics" else "")
    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/msgpack": MsgpackCodec()}, apps=apps,
                options=NodeOptions(listen=[f"tcp://127.0.0.1:{port}"] if port else [],
                                    metrics=metrics,
                                    # A traced server takes long over a burst: no
                                    # keepalive timeout in the middle of a measurement.
                                    keepalive_interval=60.0, keepalive_timeout=300.0))


async def serve(config: str) -> None:
    """The server node (benchmarks/messaging.py's app); prints its address (and its
    /metrics address) when ready."""
    nodes: list[Any] = []

    async def cpu() -> float:  # this process's CPU seconds so far, spans exported
        await flush(nodes[0])
        return time.process_time()

    async def spans_dropped() -> int:
        return dropped(nodes[0])

    app = bench_app({b"cpu": cpu, b"dropped": spans_dropped})
    async with make_node(config, free_port(), [app]) as node:
        nodes.append(node)
        print(node.addresses[0], node.metrics.address if node.metrics else "-", flush=True)
        await asyncio.Event().wait()


async def flush(node: Any) -> None:
    """Export the spans a node has queued: their cost is counted in its CPU time."""
    if node._tracing is not None:
        await node._tracing.flush()


def dropped(node: Any) -> int:
    """Spans a node dropped because its exporter fell behind (not paid for: reported)."""
    return 0 if node._tracing is None else int(node._tracing._batcher.dropped)


async def one_way(node: Any, peer: str, count: int) -> tuple[float, float]:
    """Messages/s, and CPU microseconds per message of both processes (CPU time suffers
    less than wall time from the other work on a busy machine)."""
    body = os.urandom(64)
    before = int(await node.request(peer, "echo", b"count", timeout=300))
    cpu = await cpu_now(node, peer)
    started = time.perf_counter()
    for _ in range(count):
        await node.send(peer, "sink", body)
    handled = int(await node.request(peer, "echo", b"count", timeout=300)) - before
    elapsed = time.perf_counter() - started
    cpu = await cpu_now(node, peer) - cpu
    assert handled == count, f"{handled} of {count} handled"
    return count / elapsed, cpu / count * 1e6


async def cpu_now(node: Any, peer: str) -> float:
    """CPU seconds so far of both processes, each after exporting the spans it queued."""
    await flush(node)
    return time.process_time() + float(await node.request(peer, "echo", b"cpu",
                                                          timeout=300))


async def round_trips(node: Any, peer: str, count: int) -> tuple[float, float, float]:
    """Sequential requests: p50 round trip (us), requests/s, and CPU microseconds per
    request of both processes (spans exported, as for one-way)."""
    body, times = os.urandom(64), []
    cpu = await cpu_now(node, peer)
    started = time.perf_counter()
    for _ in range(count):
        sent = time.perf_counter()
        assert await node.request(peer, "echo", body) == body
        times.append((time.perf_counter() - sent) * 1e6)
    rate = count / (time.perf_counter() - started)
    cpu = await cpu_now(node, peer) - cpu
    return statistics.median(times), rate, cpu / count * 1e6


def scraper(address: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
                answer.read()
        except OSError:  # the server is being stopped
            return


def start_server(config: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """The server node's process, started with ``env``."""
    return subprocess.Popen([sys.executable, __file__, "--serve", config],
                            stdout=subprocess.PIPE, text=True, env=env)


async def run_config(config: str, scale: float, spans: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for key in SAMPLED_ENV:
        env.pop(key, None)
        os.environ.pop(key, None)
    if config in ("tracing", "sampled"):
        traced = TRACE_ENV if config == "tracing" else SAMPLED_ENV
        env.update(traced, P2PHOST_TRACES_FILE=str(spans.with_suffix(".server")))
        os.environ.update(traced, P2PHOST_TRACES_FILE=str(spans.with_suffix(".client")))
    server = start_server(config, env)
    stop = threading.Event()
    try:
        assert server.stdout is not None
        address, metrics = server.stdout.readline().split()
        if metrics != "-":
            threading.Thread(target=scraper, args=(metrics, stop), daemon=True).start()
        async with make_node(config, None, []) as client:
            peer = await client.connect(address)
            await one_way(client, peer, int(5_000 * scale))  # warm up
            rate, cpu = await one_way(client, peer, int(20_000 * scale))
            figures = {"one-way 64 B (msg/s)": rate, "one-way CPU us/msg": cpu}
            p50, rate, cpu = await round_trips(client, peer, int(4_000 * scale))
            figures["round trip p50 (us)"] = p50
            figures["requests/s (sequential)"] = rate
            figures["request CPU us/req"] = cpu
            figures["spans dropped"] = dropped(client) + int(
                await client.request(peer, "echo", b"dropped", timeout=300))
            return figures
    finally:
        stop.set()
        server.kill()
        server.wait(10)


async def run(rounds: int, scale: float) -> dict[str, dict[str, float]]:
    seen: dict[str, dict[str, list[float]]] = {c: {} for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(rounds):
            shift = number % len(CONFIGS)
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                figures = await run_config(config, scale, Path(tmp) / f"spans-{number}")
                print(f"[round {number + 1}] {config}: " + ", ".join(
                    f"{k} {v:,.2f}" if "CPU" in k else f"{k} {v:,.0f}"
                    for k, v in figures.items()), file=sys.stderr, flush=True)
                for metric, value in figures.items():
                    seen[config].setdefault(metric, []).append(value)
    return {c: {m: statistics.median(v) for m, v in ms.items()} for c, ms in seen.items()}


def report(results: dict[str, dict[str, float]]) -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':28}{'off':>10}" + "".join(f"{c:>12}{'ratio':>7}" for c in CONFIGS[1:]))
    for metric, base in results["off"].items():
        shown = ".2f" if "CPU" in metric else ",.0f"  # CPU: a few microseconds
        print(f"{metric:28}{base:10{shown}}" + "".join(
            f"{results[c][metric]:12{shown}}" + (f"{results[c][metric] / base:7.2f}" if base
                                                 else f"{'-':>7}")
            for c in CONFIGS[1:]))
    print("ratio = configuration / off (round trips: lower is better). Aims: metrics cost "
          "<= 5 %, tracing (100 % sampled) <= 30 %; sampled = tracing at 1 %.")


def floor(count: int = 50_000) -> None:
    """CPU microseconds per span in a bare loop, exporter thread and its file writes
    included: the OpenTelemetry SDK's span (``start_as_current_span``, attributes set at
    creation, BatchSpanProcessor), with an exporter that drops the spans and with the
    jsonl one, beside one span of the node's own recorder (p2phost/_observability/_spans)
    with the jsonl exporter. What a traced one-way message costs at least: three spans."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanKind

    from p2phost._observability._spans import Batcher, JsonLinesExporter, Spec

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    attributes = {"messaging.system": "p2phost", "messaging.destination.name": "sink",
                  "messaging.operation.type": "send", "p2phost.peer": "12D3KooW" * 6}
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(count + 1)  # nothing dropped
    with tempfile.TemporaryDirectory() as tmp:
        for label, exporter in (("dropped", Dropping()),
                                ("jsonl", JsonLinesExporter(f"{tmp}/sdk.jsonl"))):
            provider = TracerProvider(resource=Resource.create({"service.name": "floor"}))
            provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=count + 1))
            tracer = provider.get_tracer("floor")
            started = time.process_time()
            for _ in range(count):
                with tracer.start_as_current_span("send sink", kind=SpanKind.PRODUCER,
                                                  attributes=attributes):
                    pass
            provider.force_flush()
            took = time.process_time() - started
            provider.shutdown()
            print(f"OpenTelemetry SDK span, exporter {label:8} {took / count * 1e6:6.2f} "
                  "us CPU per span")
        # The node's own: recorded only (no exporter: the thread pops and drops the
        # records), then recorded and written to jsonl; the difference is the export.
        for label, exporters in (("recorded only", []),
                                 ("exporter jsonl", [JsonLinesExporter(f"{tmp}/ours.jsonl")])):
            batcher = Batcher(exporters, Resource.create({"service.name": "floor"}),
                              InstrumentationScope("p2phost"))
            # The spec by its number in the batcher's table, as the node records it (a
            # spec object in the record takes the exporter's slower general path).
            spec = batcher.known(Spec("send sink", SpanKind.PRODUCER, attributes))
            getrandbits, clock = __import__("random").getrandbits, time.time_ns
            started = time.process_time()
            for _ in range(count):
                start = clock()
                batcher.add((spec, getrandbits(192).to_bytes(24), b"", start, clock(), None))
            batcher.flush()
            took = time.process_time() - started
            batcher.shutdown()
            print(f"p2phost's span, {label:15}         {took / count * 1e6:6.2f} us CPU "
                  f"per span (load average {os.getloadavg()[0]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true",
                        help="only the CPU per span of a bare loop: the SDK's and p2phost's")
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of every configuration; the median is reported")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if args.floor:
        floor()
        return
    report(asyncio.run(run(max(1, args.rounds), 0.1 if args.quick else 1.0)))


if __name__ == "__main__":
    main()
