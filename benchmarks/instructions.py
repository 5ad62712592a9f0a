"""Instructions per message under callgrind: p2phost beside raw asyncio, deterministic.

Wall-clock rates on a shared 2-CPU machine swing with the other load; the number of
instructions a fixed workload executes does not (to within a few per cent). Each
workload runs the server and the client in one process (both sides' instructions are
counted) under ``valgrind --tool=callgrind``, twice: with N units and with 2N. The
difference divided by N is the cost of one unit without start-up, imports and warm-up:

* ``oneway``: one 64 B message sent and handled;
* ``oneway1k``: one 1 KiB message sent and handled (where copies of the body show);
* ``rtt``: one request/reply round trip, one at a time;
* ``flight``: one request/reply with 64 in flight.

``--noise`` adds p2phost with noise-security on both nodes, as a ratio to plaintext
p2phost (issue 16's aim for the round trip's time: <= 1.3x), and ``noise-no-aead``: the
same with the AEAD calls replaced by a copy and a blank tag (a diagnostic, never a
configuration: what noise-security's own Python costs, apart from ``cryptography``).
``--metrics`` adds p2phost
with ``[metrics] listen`` on both nodes, as a ratio to p2phost without: what counting and
timing cost per message. ``--tracing`` adds p2phost with both
nodes tracing every message (``OTEL_TRACES_EXPORTER=jsonl``, the default parent-based
always-on sampler; the exporter thread's instructions and its file writes are counted, as
closing the nodes exports what they queued). ``--sampled`` adds the same at 1 %
sampling (``parentbased_traceidratio``): what an unsampled message's context costs.

``--server`` counts the server's process only, on asyncio's loop and on uvloop (with
``--noise`` also noise-security's server beside plaintext p2phost's; the client
runs outside callgrind; the server's counts are zeroed after the warm-up and dumped after
N units and again after 2N more, with ``callgrind_control``): where a round trip's cost
lies, beside raw asyncio's server on the same loop. Its run-to-run spread is about 1 %
(the server runs with ``PYTHONHASHSEED=0``). ``--keep DIR`` keeps each server's dump of
the 2N units (``DIR/SYSTEM-WHAT-LOOP.out``) for ``callgrind_annotate``: compare two
systems function by function, e.g. plaintext p2phost's server and noise-security's.

Run ``python benchmarks/instructions.py`` (valgrind must be on PATH; about 10 minutes;
``--only rtt`` for one workload). p2phost runs on asyncio's loop with tcp-transport and
msgpack-codec, as in ``benchmarks/messaging.py``, whose workloads and raw asyncio
baseline it reuses.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import messaging as m

#: Units per workload in the smaller run (the larger has twice as many).
UNITS = {"oneway": 10_000, "oneway1k": 10_000, "rtt": 1_000, "flight": 1_000}


async def _request(self: Any, body: bytes) -> bytes:
    # Under callgrind a backlog takes far longer than the default 10 s request timeout.
    reply: bytes = await self.node.request(self.peer, "echo", body, timeout=600)
    return reply


def _patient_nodes(metrics: bool) -> None:
    """Nodes that wait as long as callgrind needs: a client whose server works through a
    backlog hears nothing for longer than the keepalive timeout (15 s). With ``metrics``,
    both serve /metrics (``[metrics] listen``), not scraped: what counting costs."""
    import p2phost._runtime as runtime
    from p2phost._observability import MetricsSettings

    served = MetricsSettings(listen="127.0.0.1:0" if metrics else "")

    class Patient(runtime.Node):
        def __init__(self, *args: Any, options: Any = None, **kwargs: Any) -> None:
            options = dataclasses.replace(options or runtime.NodeOptions(), metrics=served,
                                          keepalive_interval=600.0, keepalive_timeout=3600.0)
            super().__init__(*args, options=options, **kwargs)

    runtime.Node = Patient  # type: ignore[misc]  # bench_node and P2PClient import it
    m.P2PClient.request = _request  # type: ignore[method-assign]


def _without_aead() -> None:
    """noise-security's connections with the AEAD calls swapped for a copy and a blank
    tag (same sizes): the diagnostic ``noise-no-aead`` (both nodes run in this process)."""
    from p2phost_noise_security import _connection

    init = _connection.NoiseConnection.__init__
    tag = bytes(16)

    def blank(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._encrypt = lambda nonce, plaintext, ad: plaintext + tag
        self._decrypt = lambda nonce, message, ad: message[:-16]

    _connection.NoiseConnection.__init__ = blank  # type: ignore[method-assign]


#: The environment of ``--tracing``'s runs (the traces file is set per run).
TRACE_ENV = {"OTEL_TRACES_EXPORTER": "jsonl", "OTEL_TRACES_SAMPLER": "parentbased_always_on",
             "OTEL_BSP_MAX_QUEUE_SIZE": "1000000"}  # none dropped: all are paid for
#: ``--sampled``: one trace in a hundred recorded, as docs/operations.md advises.
SAMPLED_ENV = {**TRACE_ENV, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
               "OTEL_TRACES_SAMPLER_ARG": "0.01"}


async def workload(system: str, what: str, units: int) -> None:
    """Warm up, then run ``units`` of ``what`` against ``system``, both in this process."""
    port = m.free_port()
    if system == "raw":
        server: Any = asyncio.ensure_future(m.serve_raw(port))
        await asyncio.sleep(0.1)
        client: m.Client = await m.RawClient.open(port)
    else:
        _patient_nodes(metrics=system == "metrics")
        assert (system in ("tracing", "sampled")) == ("OTEL_TRACES_EXPORTER" in os.environ)
        secure = system.startswith("noise")
        if system == "noise-no-aead":
            _without_aead()
        server = m.bench_node(port, secure)
        await server.start()
        client = await m.P2PClient.open(port, secure)
    await m.one_way(client, 64, 2000)
    await m.round_trips(client, 200)
    if what.startswith("oneway"):
        await m.one_way(client, 1024 if what == "oneway1k" else 64, units)
    elif what == "rtt":
        await m.round_trips(client, units)
    else:
        await m.in_flight(client, units)
    if system in ("tracing", "sampled"):
        # Every span exported before the nodes close (closing waits 30 s at most, which
        # a long run under callgrind on a busy machine can pass: spans not exported are
        # not counted).
        for node in (server, client.node):  # type: ignore[attr-defined]
            await asyncio.to_thread(node._tracing._batcher.flush, 24 * 3600.0)
            assert not node._tracing._batcher._queue and not node._tracing._batcher.dropped
    await client.close()
    if system == "raw":
        server.cancel()
    else:
        await server.close()


def instructions(system: str, what: str, units: int) -> int:
    """Instructions callgrind counts for one whole run of the workload."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    with tempfile.TemporaryDirectory() as tmp:
        if system in ("tracing", "sampled"):
            env.update(TRACE_ENV if system == "tracing" else SAMPLED_ENV,
                       P2PHOST_TRACES_FILE=f"{tmp}/spans.jsonl")
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable,
             __file__, "--run", system, what, str(units)],
            capture_output=True, text=True, check=True, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def serve(system: str, port: int, loop: str) -> None:
    """``--serve``: the server of ``system`` (raw or p2phost, nodes as patient as
    :func:`_patient_nodes` makes them) on ``loop``, until killed."""
    if system != "raw":
        _patient_nodes(metrics=False)
    with asyncio.Runner(loop_factory=functools.partial(m.new_loop, loop)) as runner:
        runner.run(m.serve_raw(port) if system == "raw"
                   else m.serve_p2phost(port, secure=system == "noise"))


def _dumped(path: Path) -> int:
    found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"callgrind wrote no total to {path}")
    return int(found.group(1))


def server_instructions(system: str, what: str, units: int, loop: str,
                        keep: Path | None = None) -> float:
    """Instructions of the server's process per unit of ``what``, the client outside
    callgrind: the dump after 2N units less the one after N, over N. With ``keep``, the
    dump of the 2N units is copied there as ``SYSTEM-WHAT-LOOP.out`` (for
    ``callgrind_annotate``: each function's instructions over 2N units)."""
    port = m.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
             sys.executable, __file__, "--serve", system, str(port), loop],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"})
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"

            def control(*args: str) -> None:
                subprocess.run(["callgrind_control", *args, str(server.pid)], check=True,
                               capture_output=True)

            async def client() -> None:
                peer = await (m.RawClient.open(port) if system == "raw"
                              else m.P2PClient.open(port, secure=system == "noise"))
                run = {"oneway": lambda n: m.one_way(peer, 64, n),
                       "oneway1k": lambda n: m.one_way(peer, 1024, n),
                       "rtt": lambda n: m.round_trips(peer, n),
                       "flight": lambda n: m.in_flight(peer, n)}[what]
                await m.one_way(peer, 64, 2000)
                await m.round_trips(peer, 200)
                await asyncio.sleep(0.5)  # (the server done with what the warm-up left)
                control("--zero")
                for part in ("first", "second"):
                    await run(units if part == "first" else 2 * units)  # (all handled)
                    control("--dump", part)
                await peer.close()

            asyncio.run(client())
        finally:
            server.terminate()
            server.wait()
        first, second = (_dumped(Path(f"{tmp}/out.{n}")) for n in (1, 2))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(f"{tmp}/out.2", keep / f"{system}-{what}-{loop}.out")
    return (second - first) / units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=list(UNITS), action="append")
    parser.add_argument("--noise", action="store_true",
                        help="also p2phost with noise-security on both nodes")
    parser.add_argument("--metrics", action="store_true",
                        help="also p2phost with [metrics] listen on both nodes (issue 20's "
                             "aim: <= 5 %% more than without)")
    parser.add_argument("--tracing", action="store_true",
                        help="also p2phost with both nodes tracing every message (issue 20's "
                             "aim: <= 30 %% more than without)")
    parser.add_argument("--sampled", action="store_true",
                        help="also p2phost with both nodes tracing at 1 %% sampling")
    parser.add_argument("--server", action="store_true",
                        help="count the server's process only (asyncio's loop and uvloop), "
                             "the client outside callgrind")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="with --server: keep each server's callgrind dump in DIR")
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        system, what, units = args.run
        asyncio.run(workload(system, what, int(units)))
        return
    if args.serve:
        system, port, loop = args.serve
        serve(system, int(port), loop)
        return
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(instruction counts do not depend on it)")
    if args.server:
        _patient_nodes(metrics=False)  # the client's too: its server is slow under callgrind
        noise = ["noise"] if args.noise else []
        print(f"{'server instructions per unit':34}{'p2phost':>12}{'raw':>12}{'ratio':>8}"
              + "".join(f"{system:>14}{'/p2phost':>9}" for system in noise))
        for what in args.only or list(UNITS):
            for loop in ("asyncio", "uvloop"):
                per = {system: server_instructions(system, what, UNITS[what], loop, args.keep)
                       for system in ("p2phost", "raw", *noise)}
                print(f"{f'{what} ({loop})':34}{per['p2phost']:>12,.0f}{per['raw']:>12,.0f}"
                      f"{per['p2phost'] / per['raw']:>8.2f}" + "".join(
                          f"{per[system]:>14,.0f}{per[system] / per['p2phost']:>9.3f}"
                          for system in noise), flush=True)
        return
    extra = [s for s, wanted in (("noise", args.noise), ("noise-no-aead", args.noise),
                                 ("metrics", args.metrics),
                                 ("tracing", args.tracing), ("sampled", args.sampled))
             if wanted]
    systems = ("p2phost", "raw", *extra)
    print(f"{'instructions per unit':28}{'p2phost':>12}{'raw':>12}{'ratio':>8}"
          + "".join(f"{system:>14}{'/p2phost':>9}" for system in extra))
    for what in args.only or list(UNITS):
        units = UNITS[what]
        per = {system: (instructions(system, what, 2 * units)
                        - instructions(system, what, units)) / units
               for system in systems}
        print(f"{what:28}{per['p2phost']:>12,.0f}{per['raw']:>12,.0f}"
              f"{per['p2phost'] / per['raw']:>8.2f}" + "".join(
                  f"{per[system]:>14,.0f}{per[system] / per['p2phost']:>9.3f}"
                  for system in extra), flush=True)


if __name__ == "__main__":
    main()
