"""Stored sends to a peer that is not running, beside the broker's own client, in one run.

For every durable medium (Redis Streams, NATS JetStream, MQTT, AMQP, PostgreSQL):

* **store**: N sends to an offline peer (never run), one at a time, each returning once
  the medium acknowledged the append (XADD reply, JetStream ack, PUBACK, publisher
  confirm, COMMIT): p2phost seals each to the peer's key and signs it. The baseline is
  the broker's own asyncio client appending records of the same size, one at a time,
  with the same acknowledgement. Ratio = p2phost / baseline (higher is better).
* **drain**: a receiver node starting with M messages stored for it: the time until its
  app has handled the last one (opened, verified, dispatched, journalled, acknowledged).

Run ``python benchmarks/stored.py`` (``--quick``, ``--only redis``, ``--json FILE``). The
services must be up. Mosquitto keeps at most ``max_queued_messages`` (1,000 by default)
for an absent session and p2phost refuses stored sends beyond it, so MQTT stores and
drains 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PLUGINS = {"redis": "redis-transport", "nats-jetstream": "nats-transport",
           "mqtt": "mqtt-transport", "amqp": "amqp-transport",
           "postgresql": "postgres-transport"}
URLS = {"redis": "redis://127.0.0.1:6379/0", "nats-jetstream": "nats://127.0.0.1:4222",
        "mqtt": "mqtt://127.0.0.1:1883", "amqp": "amqp://guest:guest@127.0.0.1:5672/",
        "postgresql": "postgresql://127.0.0.1:5432/test"}
DRAIN_CAP = {"mqtt": 1000}
for _plugin in {*PLUGINS.values(), "msgpack-codec"}:
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

BODY = b"x" * 64


def transport_class(medium: str) -> Any:
    module = __import__(f"p2phost_{PLUGINS[medium].replace('-', '_')}")
    return next(getattr(module, n) for n in module.__all__ if n.endswith("Transport"))


def make_node(medium: str, identity: Any, apps: list[Any], listen: bool) -> Any:
    from p2phost_msgpack_codec import MsgpackCodec

    from p2phost._runtime import Node, NodeOptions

    cls = transport_class(medium)
    extra = {"durable": True} if medium == "nats-jetstream" else {}
    transport = cls(peer_id=identity.peer_id, **extra)
    return Node(identity, transports={s: transport for s in cls.schemes},
                codecs={"application/msgpack": MsgpackCodec()}, apps=apps,
                options=NodeOptions(listen=[URLS[medium]] if listen else [], client=not listen))


async def p2phost_store(medium: str, count: int) -> tuple[float, int]:
    """(stored sends per second, bytes per record on the medium)."""
    from p2phost_sdk import Identity

    peer = Identity.generate()
    address = f"{URLS[medium]}#{peer.peer_id}"
    node = make_node(medium, Identity.generate(), [], listen=False)
    sizes: list[int] = []
    async with node:
        transport = next(iter(node._transports.values()))
        original = transport.post

        async def post(address: str, payload: bytes, **kwargs: Any) -> str:
            sizes.append(len(payload) + 37 + len(node.peer_id))  # + the record header
            return str(await original(address, payload, **kwargs))

        transport.post = post
        await node.store(address, "sink", BODY)  # the inbox is created: not timed
        started = time.perf_counter()
        for _ in range(count):
            await node.store(address, "sink", BODY)
        elapsed = time.perf_counter() - started
        await delete_inbox(medium, peer)
    return count / elapsed, sizes[-1]


async def delete_inbox(medium: str, identity: Any) -> None:
    cls = transport_class(medium)
    extra = {"durable": True} if medium == "nats-jetstream" else {}
    await cls(peer_id=identity.peer_id, **extra).delete_inbox(URLS[medium])


async def p2phost_drain(medium: str, count: int) -> float:
    """Seconds from a receiver's start to its app handling the last of ``count`` stored
    messages."""
    from p2phost_sdk import App, Identity, Message, handler

    class Sink(App):
        name = "sink"
        mailbox_size = 4096

        def __init__(self) -> None:
            self.count, self.done = 0, asyncio.Event()

        @handler("sink")
        async def sink(self, message: Message) -> None:
            self.count += 1
            if self.count == count:
                self.done.set()

    peer = Identity.generate()
    address = f"{URLS[medium]}#{peer.peer_id}"
    sender = make_node(medium, Identity.generate(), [], listen=False)
    async with sender:
        for start in range(0, count, 100):
            # In order per sender: each batch of appends is concurrent, batches in turn.
            await asyncio.gather(*(sender.store(address, "sink", BODY)
                                   for _ in range(min(100, count - start))))
    sink = Sink()
    receiver = make_node(medium, peer, [sink], listen=True)
    started = time.perf_counter()
    await receiver.start()
    try:
        await asyncio.wait_for(sink.done.wait(), 300)
        return time.perf_counter() - started
    finally:
        await receiver.close()
        await delete_inbox(medium, peer)


# -- baselines: the broker's own client, one acknowledged append at a time -------------

async def baseline_store(medium: str, count: int, size: int) -> float:
    record = b"r" * size
    tag = secrets.token_hex(4)
    if medium == "redis":
        import redis.asyncio as aioredis

        r = aioredis.Redis()
        key = f"bench:stored:{tag}"
        started = time.perf_counter()
        for _ in range(count):
            await r.xadd(key, {"r": record})
        elapsed = time.perf_counter() - started
        await r.delete(key)
        await r.aclose()
    elif medium == "nats-jetstream":
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        await js.add_stream(name=f"bench-stored-{tag}", subjects=[f"bench.stored.{tag}"])
        started = time.perf_counter()
        for _ in range(count):
            await js.publish(f"bench.stored.{tag}", record)
        elapsed = time.perf_counter() - started
        await js.delete_stream(f"bench-stored-{tag}")
        await nc.close()
    elif medium == "mqtt":
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"bench-{tag}") as client:
            started = time.perf_counter()
            for _ in range(count):
                await client.publish(f"bench/stored/{tag}", record, qos=1)
            elapsed = time.perf_counter() - started
    elif medium == "amqp":
        import aio_pika

        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"bench.stored.{tag}", durable=True)
        started = time.perf_counter()
        for _ in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(record, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name)
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
    else:
        import psycopg

        db = await psycopg.AsyncConnection.connect("postgresql://127.0.0.1:5432/test",
                                                   autocommit=True)
        table = f"bench_stored_{tag}"
        await db.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body bytea)")
        started = time.perf_counter()
        for _ in range(count):
            await db.execute(f"INSERT INTO {table} (body) VALUES (%s)", (record,))
        elapsed = time.perf_counter() - started
        await db.execute(f"DROP TABLE {table}")
        await db.close()
    return count / elapsed


async def run(media: list[str], count: int, drain: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for medium in media:
        # MQTT: no more than the broker queues for an absent session (p2phost refuses the
        # rest; the broker would drop it), with the first, untimed store.
        stored = min(count, DRAIN_CAP.get(medium, count + 1) - 1)
        ours, size = await p2phost_store(medium, stored)
        base = await baseline_store(medium, stored, size)
        drained = min(drain, DRAIN_CAP.get(medium, drain))
        seconds = await p2phost_drain(medium, drained)
        results[medium] = {"stored_per_s": round(ours), "baseline_per_s": round(base),
                           "ratio": round(ours / base, 2), "record_bytes": size,
                           "drained": drained, "drain_s": round(seconds, 2),
                           "drain_per_s": round(drained / seconds),
                           "load": round(os.getloadavg()[0], 1)}
        row = results[medium]
        # The machine is shared: a figure means little without the load beside it.
        print(f"{medium:15} stored {row['stored_per_s']:>6}/s  baseline "
              f"{row['baseline_per_s']:>6}/s  ratio {row['ratio']:>5}  ({size} B)  "
              f"drain {drained} in {row['drain_s']} s ({row['drain_per_s']}/s)  "
              f"load {row['load']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 sends, drain 1,000")
    parser.add_argument("--only", choices=sorted(URLS), action="append")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    count, drain = (500, 1000) if args.quick else (2000, 10_000)
    results = asyncio.run(run(args.only or list(URLS), count, drain))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
