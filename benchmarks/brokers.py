"""p2phost over each broker beside that broker's own client doing the same, in one run.

For every medium (Redis Streams, core NATS, NATS JetStream, MQTT, AMQP, PostgreSQL):

* one-way throughput: N messages of 64 B from one party to another, counted when the
  receiver has handled (and acknowledged) the last one;
* request/reply latency: one request at a time, answered through the asker's own inbox
  (p50 and p99).

p2phost runs two in-process nodes with the medium's transport plugin and msgpack-codec:
the full path (envelope, connection records, flow control, mailbox, handler, ack).
The baseline is the broker's own asyncio client used directly with the same delivery
guarantees: redis-py (XADD pipelines, XREADGROUP, XACK), nats-py (publish and flush;
JetStream publish with acks, pull consumer, ack), aiomqtt (QoS 1), aio-pika (publisher
confirms, manual acks), psycopg (INSERT and NOTIFY, a claiming UPDATE, DELETE). Ratios are
p2phost / baseline (throughput: higher is better; latency: lower is better).

Beside each rate, ``cpu`` is this process's CPU time per one-way message (both nodes,
or the baseline's sender and receiver, run here; the broker's own CPU is not in it): on
a machine shared with other work it moves far less than the wall-clock rates do.

Each round runs every medium's baseline and p2phost once, in turn (which goes first
alternates from round to round); a ratio is taken within a round, and the summary gives
the median of the rounds' with the lowest and highest in brackets: a broker's rate
swings by half from one run to the next (PostgreSQL's with its disk), so one round's
ratio says little.

Run ``python benchmarks/brokers.py`` (3 rounds; ``--rounds 1`` for one, ``--quick`` for
a fifth of the messages, ``--only redis`` for one medium, ``--json FILE`` to keep the
figures). The services must be up (``scripts/services.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from messaging import spread

from p2phost_sdk.inbox import stop_if_cancelled

REPO = Path(__file__).resolve().parent.parent
PLUGINS = {"redis": "redis-transport", "nats": "nats-transport",
           "nats-jetstream": "nats-transport", "mqtt": "mqtt-transport",
           "amqp": "amqp-transport", "postgresql": "postgres-transport"}
URLS = {"redis": "redis://127.0.0.1:6379/0", "nats": "nats://127.0.0.1:4222",
        "nats-jetstream": "nats://127.0.0.1:4222", "mqtt": "mqtt://127.0.0.1:1883",
        "amqp": "amqp://guest:guest@127.0.0.1:5672/",
        "postgresql": "postgresql://127.0.0.1:5432/test"}
for _plugin in {*PLUGINS.values(), "msgpack-codec"}:
    sys.path.insert(0, str(REPO / "official-plugins" / _plugin / "src"))

BODY = b"x" * 64
BATCH = 256


# -- p2phost ----------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def p2phost_pair(medium: str) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Two started nodes over ``medium`` (the second counts and echoes)."""
    from p2phost_msgpack_codec import MsgpackCodec

    from p2phost._runtime import Node, NodeOptions
    from p2phost_sdk import App, Identity, Message, handler

    module = __import__(f"p2phost_{PLUGINS[medium].replace('-', '_')}")
    cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Transport"))

    class Sink(App):
        name = "sink"
        mailbox_size = 4096

        def __init__(self) -> None:
            self.count, self.target, self.done = 0, 0, asyncio.Event()

        @handler("sink")
        async def sink(self, message: Message) -> None:
            self.count += 1
            if self.count == self.target:
                self.done.set()

        @handler("echo")
        async def echo(self, message: Message) -> Any:
            return message.body

    def node(apps: list[App]) -> Node:
        identity = Identity.generate()
        extra = {"durable": True} if medium == "nats-jetstream" else {}
        transport = cls(peer_id=identity.peer_id, **extra)
        return Node(identity, transports={s: transport for s in cls.schemes},
                    codecs={"application/msgpack": MsgpackCodec()}, apps=apps,
                    options=NodeOptions(listen=[URLS[medium]]))

    sink = Sink()
    a, b = node([]), node([sink])
    await b.start()
    await a.start()
    try:
        peer = await a.connect(b.addresses[0])
        yield a, peer, sink
    finally:
        await a.close()
        await b.close()


async def p2phost_run(medium: str, count: int, asks: int) -> tuple[float, float, list[float]]:
    async with p2phost_pair(medium) as (node, peer, sink):
        sink.target = count
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            await node.send(peer, "sink", BODY)
        await asyncio.wait_for(sink.done.wait(), 120)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        times = []
        for _ in range(asks):
            started = time.perf_counter()
            await node.request(peer, "echo", BODY)
            times.append(time.perf_counter() - started)
    return count / elapsed, cpu / count, times


# -- baselines: each broker's own client ------------------------------------------------

class Baseline:
    """A sender, a receiver that counts, and a responder that echoes, on one broker."""

    def __init__(self) -> None:
        self.count, self.target, self.done = 0, 0, asyncio.Event()
        self.tag = secrets.token_hex(4)

    def got(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self.target:
            self.done.set()

    async def open(self) -> None: ...
    async def send_many(self, bodies: list[bytes]) -> None: ...
    async def ask(self, body: bytes) -> bytes: ...
    async def close(self) -> None: ...


class RedisBaseline(Baseline):
    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.Redis()
        self.reader, self.replier = aioredis.Redis(), aioredis.Redis()
        self.inbox, self.asks, self.answers = (f"bench:{self.tag}:{k}" for k in "iqa")
        for key in (self.inbox, self.asks, self.answers):
            await self.r.xgroup_create(key, "g", id="0", mkstream=True)
        self.tasks = [asyncio.ensure_future(self._consume(self.reader, self.inbox, None)),
                      asyncio.ensure_future(self._consume(self.replier, self.asks, self.answers))]
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.tasks.append(asyncio.ensure_future(self._consume(aioredis.Redis(), self.answers,
                                                              "")))

    async def _consume(self, client: Any, key: str, reply_to: str | None) -> None:
        while True:
            reply = await client.xreadgroup("g", "c", {key: ">"}, count=BATCH, block=1000)
            stop_if_cancelled()  # redis-py may swallow the cancellation of a blocked read
            for _, entries in reply or []:
                ids = [entry_id for entry_id, _ in entries]
                if reply_to:
                    await self.r.xadd(reply_to, {"b": entries[0][1][b"b"]})
                elif reply_to == "":
                    self.replies.put_nowait(entries[0][1][b"b"])
                await client.xack(key, "g", *ids)
                if reply_to is None:
                    self.got(len(ids))

    async def send_many(self, bodies: list[bytes]) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(self.inbox, {"b": body})
            await pipe.execute()

    async def ask(self, body: bytes) -> bytes:
        await self.r.xadd(self.asks, {"b": body})
        return await self.replies.get()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.r.delete(self.inbox, self.asks, self.answers)


class NatsBaseline(Baseline):
    jetstream = False

    async def open(self) -> None:
        import nats

        self.nc = await nats.connect("nats://127.0.0.1:4222")
        self.subject = f"bench.{self.tag}"
        if self.jetstream:
            # Requests and answers go through the stream too, acknowledged, as p2phost's do.
            self.js = self.nc.jetstream()
            await self.js.add_stream(name=f"bench-{self.tag}", subjects=[
                self.subject, f"{self.subject}.ask", f"{self.subject}.answer"])
            self.pull = await self.js.pull_subscribe(self.subject, durable="c")
            self.asks = await self.js.pull_subscribe(f"{self.subject}.ask", durable="q")
            self.answers = await self.js.pull_subscribe(f"{self.subject}.answer", durable="a")
            self.tasks = [asyncio.ensure_future(self._pull()),
                          asyncio.ensure_future(self._respond())]
            return
        await self.nc.subscribe(self.subject, cb=self._core)

        async def echo(message: Any) -> None:
            await message.respond(message.data)

        await self.nc.subscribe(f"{self.subject}.ask", cb=echo)

    async def _core(self, message: Any) -> None:
        self.got()

    async def _pull(self) -> None:
        import nats.errors

        while True:
            try:
                messages = await self.pull.fetch(BATCH, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                await message.ack()
            self.got(len(messages))

    async def _respond(self) -> None:
        import nats.errors

        while True:
            try:
                (message,) = await self.asks.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            await self.js.publish(f"{self.subject}.answer", message.data)
            await message.ack()

    async def send_many(self, bodies: list[bytes]) -> None:
        if self.jetstream:
            acks = [await self.js.publish_async(self.subject, body) for body in bodies]
            await asyncio.gather(*acks)
        else:
            for body in bodies:
                await self.nc.publish(self.subject, body)
            await self.nc.flush()

    async def ask(self, body: bytes) -> bytes:
        if self.jetstream:
            await self.js.publish(f"{self.subject}.ask", body)
            (answer,) = await self.answers.fetch(1, timeout=5)
            await answer.ack()
            return bytes(answer.data)
        return bytes((await self.nc.request(f"{self.subject}.ask", body, timeout=5)).data)

    async def close(self) -> None:
        if self.jetstream:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.js.delete_stream(f"bench-{self.tag}")
        await self.nc.close()


class JetStreamBaseline(NatsBaseline):
    jetstream = True


class MqttBaseline(Baseline):
    """Each party publishes with one client and reads its topic with another."""

    async def open(self) -> None:
        import aiomqtt

        self.stack = contextlib.AsyncExitStack()
        clients = []
        for _ in range(4):
            client = await self.stack.enter_async_context(aiomqtt.Client("127.0.0.1"))
            client.pending_calls_threshold = 1 << 30
            clients.append(client)
        self.publisher, self.asker, self.responder, self.receiver = clients
        self.topic = f"bench/{self.tag}"
        await self.receiver.subscribe(f"{self.topic}/i", qos=1)
        await self.receiver.subscribe(f"{self.topic}/ask", qos=1)
        await self.asker.subscribe(f"{self.topic}/answer", qos=1)
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.tasks = [asyncio.ensure_future(self._receive()),
                      asyncio.ensure_future(self._answers())]

    async def _receive(self) -> None:
        async for message in self.receiver.messages:
            if str(message.topic).endswith("/ask"):
                await self.responder.publish(f"{self.topic}/answer", message.payload, qos=1)
            else:
                self.got()

    async def _answers(self) -> None:
        async for message in self.asker.messages:
            self.replies.put_nowait(message.payload)  # type: ignore[arg-type]

    async def send_many(self, bodies: list[bytes]) -> None:
        await asyncio.gather(*(self.publisher.publish(f"{self.topic}/i", body, qos=1)
                               for body in bodies))

    async def ask(self, body: bytes) -> bytes:
        await self.publisher.publish(f"{self.topic}/ask", body, qos=1)
        return await self.replies.get()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.stack.aclose()


class AmqpBaseline(Baseline):
    async def open(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        self.channel = await self.connection.channel(publisher_confirms=True)
        consumer = await self.connection.channel()
        await consumer.set_qos(prefetch_count=1024)
        names = [f"bench.{self.tag}.{k}" for k in "iqa"]
        self.queues = [await consumer.declare_queue(n, auto_delete=True) for n in names]
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def count(message: Any) -> None:
            await message.ack()
            self.got()

        async def echo(message: Any) -> None:
            await self.publish(names[2], message.body)
            await message.ack()

        async def answer(message: Any) -> None:
            await message.ack()
            self.replies.put_nowait(message.body)

        for queue, callback in zip(self.queues, (count, echo, answer), strict=True):
            await queue.consume(callback)

    async def publish(self, queue: str, body: bytes) -> None:
        import aio_pika

        await self.channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue)

    async def send_many(self, bodies: list[bytes]) -> None:
        await asyncio.gather(*(self.publish(self.queues[0].name, body) for body in bodies))

    async def ask(self, body: bytes) -> bytes:
        await self.publish(self.queues[1].name, body)
        return await self.replies.get()

    async def close(self) -> None:
        await self.connection.close()


class PostgresBaseline(Baseline):
    async def open(self) -> None:
        import psycopg

        url = URLS["postgresql"]
        self.writer = await psycopg.AsyncConnection.connect(url, autocommit=True)
        self.table = f"bench_{self.tag}"
        await self.writer.execute(f"CREATE TABLE {self.table} (id bigserial PRIMARY KEY, "
                                  "box text NOT NULL, body bytea NOT NULL, "
                                  "leased boolean NOT NULL DEFAULT false)")
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.tasks = [asyncio.ensure_future(self._consume(
            await psycopg.AsyncConnection.connect(url, autocommit=True), box))
            for box in ("i", "q", "a")]

    async def _consume(self, connection: Any, box: str) -> None:
        await connection.execute(f"LISTEN {self.table}_{box}")
        acker = await type(connection).connect(URLS["postgresql"], autocommit=True)
        while True:
            rows = await (await connection.execute(
                f"UPDATE {self.table} SET leased = true WHERE id IN (SELECT id FROM "
                f"{self.table} WHERE box = %s AND NOT leased ORDER BY id LIMIT {BATCH} "
                "FOR UPDATE SKIP LOCKED) RETURNING id, body", (box,))).fetchall()
            if not rows:
                async for _ in connection.notifies(timeout=1.0, stop_after=1):
                    break
                continue
            if box == "q":
                await self.insert("a", [bytes(rows[0][1])])
            elif box == "a":
                self.replies.put_nowait(bytes(rows[0][1]))
            await acker.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)",
                                ([row[0] for row in rows],))
            if box == "i":
                self.got(len(rows))

    async def insert(self, box: str, bodies: list[bytes]) -> None:
        await self.writer.execute(
            f"WITH added AS (INSERT INTO {self.table} (box, body) SELECT %s, b FROM "
            "unnest(%s::bytea[]) AS b RETURNING 1) SELECT pg_notify(%s, '')",
            (box, bodies, f"{self.table}_{box}"))

    async def send_many(self, bodies: list[bytes]) -> None:
        await self.insert("i", bodies)

    async def ask(self, body: bytes) -> bytes:
        await self.insert("q", [body])
        return await self.replies.get()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.writer.execute(f"DROP TABLE {self.table}")
        await self.writer.close()


BASELINES: dict[str, type[Baseline]] = {
    "redis": RedisBaseline, "nats": NatsBaseline, "nats-jetstream": JetStreamBaseline,
    "mqtt": MqttBaseline, "amqp": AmqpBaseline, "postgresql": PostgresBaseline}


async def baseline_run(medium: str, count: int, asks: int) -> tuple[float, float, list[float]]:
    base = BASELINES[medium]()
    await base.open()
    try:
        base.target = count
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, count, BATCH):
            await base.send_many([BODY] * min(BATCH, count - first))
        await asyncio.wait_for(base.done.wait(), 120)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        times = []
        for _ in range(asks):
            started = time.perf_counter()
            await asyncio.wait_for(base.ask(BODY), 10)
            times.append(time.perf_counter() - started)
    finally:
        await base.close()
    return count / elapsed, cpu / count, times


# -- the run ----------------------------------------------------------------------------

def quantile(times: list[float], q: float) -> float:
    """The ``q`` quantile of ``times``, in milliseconds."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_round(media: list[str], count: int, asks: int, first: str,
                    label: str) -> dict[str, Any]:
    """Every medium once, ``first`` ("baseline" or "p2phost") going first."""
    results: dict[str, Any] = {}
    benches = [("baseline", baseline_run), ("p2phost", p2phost_run)]
    if first == "p2phost":
        benches.reverse()
    for medium in media:
        row: dict[str, Any] = {}
        for who, bench in benches:
            rate, cpu, times = await bench(medium, count, asks)
            row[who] = {"msgs_per_s": round(rate), "cpu_us_per_msg": round(cpu * 1e6, 2),
                        "p50_ms": round(quantile(times, 0.5), 3),
                        "p99_ms": round(quantile(times, 0.99), 3)}
        row["throughput_ratio"] = round(row["p2phost"]["msgs_per_s"] /
                                        row["baseline"]["msgs_per_s"], 2)
        row["latency_ratio"] = round(row["p2phost"]["p50_ms"] / row["baseline"]["p50_ms"], 2)
        results[medium] = row
        print(f"{label}{medium:15} baseline {row['baseline']['msgs_per_s']:>7}/s "
              f"p50 {row['baseline']['p50_ms']:>6.2f} ms | p2phost "
              f"{row['p2phost']['msgs_per_s']:>7}/s p50 {row['p2phost']['p50_ms']:>6.2f} ms "
              f"(p99 {row['p2phost']['p99_ms']:.2f}) | throughput x{row['throughput_ratio']}"
              f", latency x{row['latency_ratio']} | cpu {row['baseline']['cpu_us_per_msg']:.1f}"
              f" / {row['p2phost']['cpu_us_per_msg']:.1f} us/msg", flush=True)
    return results


async def run(media: list[str], count: int, asks: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds, then each medium's medians and ratios (printed, and returned
    with every round's figures)."""
    seen = [await run_round(media, count, asks, ("baseline", "p2phost")[n % 2],
                            f"[round {n + 1}] " if rounds > 1 else "")
            for n in range(rounds)]
    results: dict[str, Any] = {}
    if rounds > 1:
        print(f"\n{rounds} rounds: medians; ratio = p2phost / baseline, the median of the "
              "rounds' [lowest-highest round]")
        print(f"{'':15}{'baseline':>11}{'p2phost':>11}{'throughput ratio':>22}"
              f"{'p50 baseline':>15}{'p2phost':>10}{'latency ratio':>22}")
    for medium in media:
        rows = [round_[medium] for round_ in seen]
        rates = {who: statistics.median(row[who]["msgs_per_s"] for row in rows)
                 for who in ("baseline", "p2phost")}
        p50s = {who: statistics.median(row[who]["p50_ms"] for row in rows)
                for who in ("baseline", "p2phost")}
        throughput = spread([row["throughput_ratio"] for row in rows])
        latency = spread([row["latency_ratio"] for row in rows])
        results[medium] = {"rounds": rows, "throughput_ratio": throughput,
                           "latency_ratio": latency}
        if rounds > 1:
            print(f"{medium:15}{rates['baseline']:>9,.0f}/s{rates['p2phost']:>9,.0f}/s"
                  f"{throughput:>22}{p50s['baseline']:>12.2f} ms{p50s['p2phost']:>7.2f} ms"
                  f"{latency:>22}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the messages")
    parser.add_argument("--only", choices=list(PLUGINS), action="append",
                        help="run only this medium (repeatable)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every medium; the median is reported (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # "no security plugin" and the like: known
    count, asks = (1000, 100) if args.quick else (5000, 300)
    print(f"{count} one-way messages of {len(BODY)} B, {asks} requests one at a time "
          f"(load average {os.getloadavg()[0]:.1f})")
    results = asyncio.run(run(args.only or list(PLUGINS), count, asks,
                                  max(1, args.rounds)))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
