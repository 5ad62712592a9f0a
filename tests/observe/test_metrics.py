"""A node's /metrics, scraped while it is busy: the counters match what was sent and
handled per topic, and drops and dead letters match their causes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2phost._manifest import Manifest
from p2phost._observability import MetricsSettings
from p2phost._runtime.messaging._stats import DeliveryStats
from p2phost_sdk import App, Delivery, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture

FAST = Delivery("at-least-once", immediate_retries=1, delayed_retries=0)
SENT, FAILING, STRAY, BAD = 300, 20, 7, 3


class Worker(App):
    """``work`` succeeds, ``flaky`` raises every other time, ``poison`` always (and is
    acknowledged: it ends as a dead letter)."""

    name = "worker"

    def __init__(self) -> None:
        self.calls = 0

    @handler("work")
    async def work(self, message: Message) -> int:
        return int(message.body)

    @handler("flaky")
    async def flaky(self, message: Message) -> None:
        self.calls += 1
        if self.calls % 2:
            raise ValueError("odd call")

    @handler("poison", delivery=FAST)
    async def poison(self, message: Message) -> None:
        raise ValueError("never")


class Caller(App):
    """Sends ``poison`` acknowledged (the receiver decides, the sender agrees)."""

    name = "caller"
    delivery = {"poison": FAST}


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    text = httpx.get(f"http://{address}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


async def test_counters_match_what_was_sent_and_handled(make_node: MakeNode) -> None:
    # Every message timed (timing-sample = 1): the histograms' counts are exact here.
    receiver = await make_node([Worker()], metrics=MetricsSettings(listen="127.0.0.1:0",
                                                                   timing_sample=1),
                               drain_timeout=3.0)
    sender = await make_node([Caller()], metrics=MetricsSettings(listen="127.0.0.1:0"))
    assert receiver.metrics is not None and sender.metrics is not None
    peer = await sender.connect(receiver.addresses[0])

    async def load() -> None:
        for i in range(SENT):
            if i % 3:
                await sender.send(peer, "work", i)
            else:
                assert await sender.request(peer, "work", i) == i
            if i % 50 == 0:
                await asyncio.sleep(0)

    busy = asyncio.create_task(load())
    during = await asyncio.to_thread(scrape, receiver.metrics.address)  # under load
    await busy
    for _ in range(FAILING):
        await sender.send(peer, "flaky", None)
    for _ in range(STRAY):
        await sender.send(peer, "nobody-handles-this", None)
    for _ in range(BAD):
        await sender.send(peer, "poison", None)
    await wait_until(lambda: receiver.delivery.stats.get("poison", "dead_lettered") == BAD
                     and receiver.delivery.stats.get("flaky", "failed") == FAILING // 2
                     and receiver.delivery.stats.get("work", "handled") == SENT, 20,
                     "every message handled, failed or dead-lettered")

    got = await asyncio.to_thread(scrape, receiver.metrics.address)
    assert total(during, "p2phost_messages_received_total", topic="work") <= SENT
    assert total(got, "p2phost_messages_received_total", topic="work",
                 peer=sender.peer_id) == SENT
    assert total(got, "p2phost_messages_handled_total", topic="work") == SENT
    assert total(got, "p2phost_messages_handled_total", topic="flaky") == FAILING // 2
    assert total(got, "p2phost_messages_failed_total", topic="flaky") == FAILING // 2
    assert total(got, "p2phost_messages_dropped_total", topic="nobody-handles-this",
                 reason="no app handles the topic") == STRAY
    assert total(got, "p2phost_messages_dead_lettered_total", topic="poison") == BAD
    assert total(got, "p2phost_messages_retried_total", topic="poison") == BAD
    assert total(got, "p2phost_dead_letters", topic="poison") == BAD
    assert total(got, "p2phost_handler_duration_seconds_count", topic="work") == SENT
    # Failures are timed too; an acknowledged handler once per run (its retry included).
    assert total(got, "p2phost_handler_duration_seconds_count", topic="flaky") == FAILING
    assert total(got, "p2phost_handler_duration_seconds_count", topic="poison") == 2 * BAD
    assert total(got, "p2phost_mailbox_wait_seconds_count", app="worker") >= SENT
    assert total(got, "p2phost_connections", transport="tcp") == 1
    assert total(got, "process_resident_memory_bytes") > 0

    sent = await asyncio.to_thread(scrape, sender.metrics.address)
    assert total(sent, "p2phost_messages_sent_total", topic="work", peer=receiver.peer_id) == SENT
    assert total(sent, "p2phost_message_bytes_sent_total", topic="work") > SENT * 30
    assert total(sent, "p2phost_messages_acked_total", topic="poison") == BAD


@pytest.mark.parametrize(("table", "words"), [
    ('listen = "9464"', "is not HOST:PORT"),
    ("listen = 9464", "expected a string HOST:PORT"),
    ("peer-labels = -1", "expected a number >= 0"),
    ("timing-sample = 0", "expected a number >= 1"),
    ("port = 1", "unknown key"),
])
def test_a_bad_metrics_table_is_named_with_its_line(tmp_path: Any, table: str,
                                                    words: str) -> None:
    manifest = tmp_path / "p2phost.toml"
    manifest.write_text(f'[node]\nname = "x"\n\n[metrics]\n{table}\n')
    _, problems = Manifest.check(manifest)
    (problem,) = problems
    assert words in str(problem) and "p2phost.toml:5" in str(problem), str(problem)


def test_peers_beyond_the_label_limit_are_counted_as_other() -> None:
    stats = DeliveryStats(peer_labels=2, topic_labels=1)
    for peer in ("a", "b", "c", "d"):
        stats.message_in("t", peer, 10)
    stats.message_in("another-topic", "a", 1)
    by_peer = stats.snapshot()["by_peer"]
    assert sorted(by_peer) == ["a", "b", "other"]
    assert by_peer["other"]["t"]["received"] == 2
    assert by_peer["a"]["other"]["received"] == 1  # topics fold too
    assert stats.get("t", "received") == 4


async def test_a_busy_peer_gets_a_round_trip_time(make_node: MakeNode) -> None:
    receiver = await make_node([Worker()], keepalive_interval=0.2)
    sender = await make_node([], keepalive_interval=0.2)
    peer = await sender.connect(receiver.addresses[0])

    async def busy() -> None:  # never idle: the keepalive must ping it anyway
        for i in range(400):
            await sender.send(peer, "work", i)
            await asyncio.sleep(0.005)

    load = asyncio.create_task(busy())
    await wait_until(lambda: all(link["rtt_ms"] for link in receiver.stats()["links"]), 10,
                     "a round trip measured")
    load.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await load
    (link,) = receiver.stats()["links"]
    assert link["peer_id"] == sender.peer_id and 0 < link["rtt_ms"] < 5000


def test_the_dispatchers_observer_buckets_as_the_histogram_does() -> None:
    from p2phost._observability._instrument import BUCKETS, Buckets, _observer

    durations = [0.0, 0.00005, BUCKETS[0], 0.00011, 0.003, 1.0, 10.0, 11.0]
    wait, handler, expected = Buckets(), Buckets(), Buckets()
    observe = _observer(wait, handler)
    for took in durations:
        expected.observe(took)
        observe(0.0, took, 2 * took)  # wait and handler each `took`, exactly
    buckets, _ = expected.cumulative()
    for series in (wait, handler):
        got, got_sum = series.cumulative()
        assert got == buckets
        assert got_sum == pytest.approx(expected.total)
    assert buckets[0] == (str(BUCKETS[0]), 3.0)  # le: equal to the bound counts in it
    assert buckets[-1] == ("+Inf", float(len(durations)))


async def test_histograms_time_a_sample_and_the_counters_count_every_message(
        make_node: MakeNode) -> None:
    receiver = await make_node([Worker()], metrics=MetricsSettings(listen="127.0.0.1:0"))
    sender = await make_node([])
    assert receiver.metrics is not None
    peer = await sender.connect(receiver.addresses[0])
    for i in range(SENT):
        await sender.send(peer, "work", i)
    await wait_until(lambda: receiver.delivery.stats.get("work", "handled") == SENT, 20,
                     "every message handled")
    text = await asyncio.to_thread(
        lambda: httpx.get(f"http://{receiver.metrics.address}/metrics", timeout=10).text)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for family in text_string_to_metric_families(text) for s in family.samples}
    assert total(got, "p2phost_messages_handled_total", topic="work") == SENT
    timed = total(got, "p2phost_handler_duration_seconds_count", topic="work")
    # About one in 16 (the gaps are 1 to 31 at random, the first message always timed).
    assert SENT / 31 <= timed <= SENT / 4, timed
    assert total(got, "p2phost_mailbox_wait_seconds_count", app="worker") == timed
    assert "about one message in 16 of each topic is timed" in text


def test_a_stamp_times_one_message_in_about_n() -> None:
    from p2phost._observability._instrument import Timings
    from p2phost._runtime.messaging._routes import Work

    async def call() -> None:
        pass

    for sample, count in ((1, 100), (8, 80_000)):
        stamp = Timings(sample)._stamp()
        items = [Work(call) for _ in range(count)]
        for item in items:
            stamp(item)
        timed = sum(1 for item in items if item.queued)
        assert items[0].queued  # the first one always
        assert timed == count if sample == 1 else abs(timed - count / sample) < count / 100


class Many(App):
    """``TOPICS`` topics, each answering its number (handlers given as a dict)."""

    name = "many"

    def handlers(self) -> dict[str, Any]:
        async def answer(message: Message) -> int:
            await asyncio.sleep(0)  # handlers of several peers interleave
            return int(message.body)
        return {f"t{n}": answer for n in range(TOPICS)}


TOPICS, SENDERS, EACH = 40, 4, 5


async def test_many_topics_and_concurrent_senders_counted_exactly_first_of_each_timed(
        make_node: MakeNode) -> None:
    receiver = await make_node([Many()], metrics=MetricsSettings(listen="127.0.0.1:0"))
    senders = [await make_node([]) for _ in range(SENDERS)]
    assert receiver.metrics is not None
    peers = [await s.connect(receiver.addresses[0]) for s in senders]

    async def send_all(sender: Any, peer: str) -> None:
        for n in range(TOPICS):
            for i in range(EACH):
                await sender.send(peer, f"t{n}", i)

    await asyncio.gather(*(send_all(s, p) for s, p in zip(senders, peers, strict=True)))
    expected = SENDERS * EACH
    await wait_until(lambda: all(receiver.delivery.stats.get(f"t{n}", "handled") == expected
                                 for n in range(TOPICS)), 30, "every message handled")
    got = await asyncio.to_thread(scrape, receiver.metrics.address)
    for n in range(TOPICS):
        assert total(got, "p2phost_messages_handled_total", topic=f"t{n}") == expected
        assert total(got, "p2phost_messages_received_total", topic=f"t{n}") == expected
        # The first message of every topic is timed, whatever the others' draws.
        assert total(got, "p2phost_handler_duration_seconds_count", topic=f"t{n}") >= 1
    assert total(got, "p2phost_mailbox_wait_seconds_count", app="many") == sum(
        total(got, "p2phost_handler_duration_seconds_count", topic=f"t{n}")
        for n in range(TOPICS))


async def test_a_handler_added_while_the_node_runs_is_timed_too(make_node: MakeNode) -> None:
    # Node.add_handler builds its route after the metrics instrumented the others: it must
    # get a stamp too, or its topic's histograms stay empty for good, silently.
    worker = Worker()
    receiver = await make_node([worker], metrics=MetricsSettings(listen="127.0.0.1:0"))
    sender = await make_node([])
    assert receiver.metrics is not None

    async def late(message: Message) -> None:
        pass
    receiver.add_handler(worker, "late", late)
    peer = await sender.connect(receiver.addresses[0])
    for i in range(3):
        await sender.send(peer, "late", i)
    await wait_until(lambda: receiver.delivery.stats.get("late", "handled") == 3, 20,
                     "the late topic's messages handled")
    got = await asyncio.to_thread(scrape, receiver.metrics.address)
    assert total(got, "p2phost_handler_duration_seconds_count", topic="late") >= 1


async def test_no_clock_is_read_per_message_with_metrics_off(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    from p2phost._runtime.messaging import _dispatch

    reads = 0
    real = _dispatch._monotonic

    def counted() -> float:
        nonlocal reads
        reads += 1
        return real()
    monkeypatch.setattr(_dispatch, "_monotonic", counted)
    receiver = await make_node([Worker()])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    for i in range(50):
        await sender.send(peer, "work", i)
    await wait_until(lambda: receiver.delivery.stats.get("work", "handled") == 50, 20,
                     "every message handled")
    assert reads == 0
