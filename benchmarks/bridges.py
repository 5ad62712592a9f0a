"""Bridges beside what they bridge, in one run.

* broker-bridge (:func:`broker_bridge`): messages/s from a name on a broker, through
  p2phost, to another name on the same broker, per broker kind. A plain client publishes
  ``count`` JSON messages on ``IN``; bridge node A maps ``IN`` in to a topic, bridge node
  B (connected to A over tcp-transport, json-codec) maps the topic out to ``OUT``; a plain
  subscriber counts what arrives on ``OUT``. The baseline, in the same run, is the
  broker's own client forwarding by hand: one loop receives each message on ``IN``,
  publishes it on ``OUT`` and acknowledges it, with the same client calls and
  acknowledgements as the bridge (its endpoints) and no p2phost in between. Kinds marked
  ``ack`` are acknowledged mappings: A acknowledges a message to the broker once B's
  delivery is in A's outbox (a SQLite commit), B acknowledges to A once the broker
  confirmed its publish.

* Dask over p2phost (``benchmarks/bridges_dask.py``, run after the brokers): 1,000 small
  tasks and a 100 MB array transfer over p2phost beside Dask's own TCP comm.

Run ``python benchmarks/bridges.py`` (``--quick`` for a short run, ``--only KIND,...``,
``dask`` among the kinds for the Dask part, ``--json FILE`` to keep the figures). The
services of scripts/services.sh must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
for _plugin in ("tcp-transport", "json-codec", "broker-bridge"):
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

# -- broker-bridge ------------------------------------------------------------------------

#: Broker kinds measured, with whether their mappings are acknowledged.
BRIDGE_KINDS = ["nats", "jetstream", "mqtt", "redis-channel", "redis-stream", "amqp",
                "postgres"]

#: Seconds one measurement may take in all (a broker that stalls is reported, not waited for).
KIND_TIMEOUT = 120.0


async def _until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


async def _pump_through(key: str, count: int, forward: Any, inbound: dict[str, Any],
                        outbound: dict[str, Any]) -> float:
    """Messages/s from ``count`` publishes on IN to ``count`` arrivals on OUT, with
    ``forward`` (an async context manager) carrying them across."""
    from tests.bridges.plain import BROKERS, plain_client

    broker = BROKERS[key]
    async with plain_client(broker, inbound) as producer, \
            plain_client(broker, outbound) as consumer:
        await consumer.subscribe()
        async with forward():
            started = time.perf_counter()
            for n in range(count):
                await producer.publish(json.dumps({"n": n, "pad": "x" * 64}).encode())
            if not await _until(lambda: len(consumer.seen.items) >= count, 30):
                raise RuntimeError(f"{key}: {len(consumer.seen.items)} of {count} arrived")
            return count / (time.perf_counter() - started)


def _mappings(key: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    import uuid

    from tests.bridges.plain import BROKERS

    broker = BROKERS[key]
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    return (broker.mapping("in", broker.unique_name(), topic),
            broker.mapping("out", broker.unique_name(), topic), topic)


async def bridged_rate(key: str, count: int) -> float:
    """Messages/s broker -> bridge A -> p2phost -> bridge B -> broker."""
    import contextlib

    from p2phost_broker_bridge import BridgeApp, BridgeSettings
    from p2phost_json_codec import JsonCodec
    from p2phost_tcp_transport import TcpTransport

    from p2phost._runtime import Node, NodeOptions
    from p2phost_sdk import Identity

    inbound, outbound, topic = _mappings(key)

    @contextlib.asynccontextmanager
    async def forward() -> Any:
        with tempfile.TemporaryDirectory() as state:
            nodes = []
            for name, mapping in (("a", inbound), ("b", outbound)):
                identity = Identity.generate()
                app = BridgeApp(BridgeSettings.from_config({"mappings": {name: mapping}}),
                                peer_id=identity.peer_id)
                os.mkdir(os.path.join(state, name))
                nodes.append((Node(identity, transports={"tcp": TcpTransport()},
                                   codecs={"application/json": JsonCodec()}, apps=[app],
                                   options=NodeOptions(listen=["tcp://127.0.0.1:0"],
                                                       state_dir=Path(state, name))), app))
            (a, a_app), (b, _) = nodes
            for node, _ in nodes:
                await node.start()
            try:
                await b.connect(a.addresses[0])
                await _until(lambda: any(topic in p.topics for p in a.peers()), 10)
                await _until(lambda: bool(a_app._opened), 10)
                yield
            finally:
                await b.close()
                await a.close()

    return await _pump_through(key, count, forward, inbound, outbound)


async def hand_rate(key: str, count: int) -> float:
    """Messages/s broker -> one loop over the broker's client -> broker."""
    import contextlib

    from p2phost_broker_bridge import BridgeSettings, EchoFilter
    from p2phost_broker_bridge._endpoint import make_endpoint

    from p2phost_sdk import cancel_and_wait, close_within

    inbound, outbound, _ = _mappings(key)
    settings = BridgeSettings.from_config({"mappings": {"in": inbound, "out": outbound}})
    source, sink = (make_endpoint(m, "hand-forwarder", timeout=10.0, queue=256,
                                  echo=EchoFilter()) for m in settings.mappings)

    @contextlib.asynccontextmanager
    async def forward() -> Any:
        await source.open()
        await sink.open()

        async def loop() -> None:
            async for item in source.receive():
                await sink.publish(item.payload)
                if item.ack is not None:
                    await item.ack()

        task = asyncio.get_running_loop().create_task(loop())
        try:
            yield
        finally:
            # redis-py's blocking XREADGROUP may not end at once when cancelled: bounded.
            await cancel_and_wait(task, 5.0)
            for endpoint in (source, sink):
                await close_within(endpoint.close(), 5.0, plugin="hand forwarder")

    return await _pump_through(key, count, forward, inbound, outbound)


async def broker_bridge(kinds: list[str], count: int) -> list[dict[str, Any]]:
    """One row per broker kind (printed as it is measured): bridged and hand-forwarded
    messages/s, and their ratio."""
    from tests.bridges.plain import BROKERS

    print("broker-bridge: messages/s broker -> p2phost -> broker, beside the broker's client "
          "forwarding by hand", flush=True)
    print(f"{'kind':<14} {'ack':<4} {'bridged/s':>10} {'by hand/s':>10} {'ratio':>6}", flush=True)
    rows: list[dict[str, Any]] = []
    for key in kinds:
        try:
            async with asyncio.timeout(KIND_TIMEOUT):
                bridged = await bridged_rate(key, count)
            async with asyncio.timeout(KIND_TIMEOUT):
                hand = await hand_rate(key, count)
        except Exception as exc:  # a service that is down: say so, go on with the others
            rows.append({"kind": key, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{key:<14} skipped: {rows[-1]['error']}", flush=True)
            continue
        row = {"kind": key, "ack": BROKERS[key].acknowledged, "count": count,
               "bridged_per_s": round(bridged), "hand_per_s": round(hand),
               "ratio": round(bridged / hand, 2)}
        rows.append(row)
        print(f"{key:<14} {'yes' if row['ack'] else 'no':<4} {row['bridged_per_s']:>10} "
              f"{row['hand_per_s']:>10} {row['ratio']:>6.2f}", flush=True)
    return rows


# -- the run ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages")
    parser.add_argument("--only", default="",
                        help="comma-separated broker kinds and/or dask (bridges_dask.py)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    only = [k for k in args.only.split(",") if k]
    kinds = [k for k in only if k != "dask"] or ([] if only else BRIDGE_KINDS)
    count = 300 if args.quick else 2000
    figures: dict[str, Any] = {}
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if kinds:
        figures["broker_bridge"] = asyncio.run(broker_bridge(kinds, count))
    if not only or "dask" in only:
        from bridges_dask import report, run_dask  # the Dask part: its own module

        figures["dask"] = run_dask(1 if args.quick else 5)
        report(figures["dask"])
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
