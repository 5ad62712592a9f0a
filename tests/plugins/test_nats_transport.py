"""nats-transport passes the SDK transport conformance kit on the real NATS, core and
JetStream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2phost_sdk import Identity
from p2phost_sdk.testing.transport import TransportCase, TransportConformance, TransportKit
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("nats-transport")

from p2phost_nats_transport import NatsTransport  # noqa: E402

URL = "nats://127.0.0.1:4222"


class TestNatsTransport(TransportConformance):
    @pytest.fixture(params=["core", "jetstream"])
    def transport_case(self, request: pytest.FixtureRequest, tmp_path: Path) -> TransportCase:
        service_or_skip("NATS", 4222)
        durable = request.param == "jetstream"
        return TransportCase(
            make=lambda limit: NatsTransport(peer_id=Identity.generate().peer_id,
                                             max_frame_size=limit, state_dir=tmp_path,
                                             durable=durable),
            listen_address=lambda: URL,
            unreachable_address=f"nats://127.0.0.1:1#{Identity.generate().peer_id}",
            bad_address="nats://127.0.0.1:4222/a/path",
            unknown_peer_address=f"{URL}#{Identity.generate().peer_id}",
            dial_within=3.0,
        )


# -- batches (several records to one core NATS message) -----------------------------------

import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from p2phost_nats_transport._batches import BATCH_MAGIC, batch, unbatch  # noqa: E402
from p2phost_nats_transport._medium import NatsMedium  # noqa: E402
from p2phost_nats_transport._progress import InProgress  # noqa: E402
from p2phost_nats_transport._streams import inbox_subject  # noqa: E402


def test_batches_keep_records_whole_and_in_order() -> None:
    records = [bytes([i]) * size for i, size in enumerate([10, 0, 30, 200, 5, 60, 61])]
    messages = batch(records, limit=100)
    assert all(len(m) <= 100 for m in messages if m[:4] == BATCH_MAGIC)
    assert records[3] in messages, "a record too large to share a message goes alone"
    got = [r for m in messages for r in (unbatch(m) if m[:4] == BATCH_MAGIC else [m])]
    assert got == records
    assert unbatch(messages[0][:-1]) == unbatch(messages[0])[:-1], "a cut tail is dropped"


@pytest.mark.parametrize("welcome", [b"batch", b""], ids=["batching reader", "older reader"])
async def test_records_go_batched_only_to_a_reader_that_said_it_takes_them(
        welcome: bytes) -> None:
    from urllib.parse import urlsplit

    from p2phost_sdk.inbox import MediumAddress

    service_or_skip("NATS", 4222)
    name = Identity.generate().peer_id
    reader = await nats.connect(URL)
    got: list[bytes] = []
    records = [b"p2pI" + bytes([i]) * 40 for i in range(5)]
    all_there = asyncio.Event()

    async def read(message: Msg) -> None:
        if message.reply and not message.data:
            await message.respond(welcome)
            return
        got.append(message.data)
        if sum(len(unbatch(m)) if m[:4] == BATCH_MAGIC else 1 for m in got) >= len(records):
            all_there.set()

    await reader.subscribe(inbox_subject(name), cb=read)
    await reader.flush()
    medium = NatsMedium(MediumAddress(URL, URL, urlsplit(URL), None), durable=False)
    await medium.connect()
    try:
        assert await medium.probe(name) is True
        await medium.append(name, records)
        await asyncio.wait_for(all_there.wait(), 5)
        if welcome:
            assert got == batch(records, 1 << 20)
        else:
            assert got == records
    finally:
        await medium.close(delete_inbox=False)
        await reader.close()


async def test_a_reader_that_does_not_read_holds_the_sender_to_its_window() -> None:
    """Backpressure with batches and without flushes: what reaches the reader's inbox
    stays within the window however much the sender has to send."""
    from p2phost_sdk.inbox import InboxOptions

    service_or_skip("NATS", 4222)
    window = 32
    make = lambda limit: NatsTransport(  # noqa: E731
        peer_id=Identity.generate().peer_id, max_frame_size=limit,
        options=InboxOptions(window=window))
    case = TransportCase(make=make, listen_address=lambda: URL,
                         unreachable_address="nats://127.0.0.1:1", bad_address="",
                         unknown_peer_address="")
    frames = [i.to_bytes(4, "big") * 256 for i in range(2000)]  # 1 KiB each
    watcher = await nats.connect(URL)
    seen = 0
    try:
        async with TransportKit(case).pair() as (client, server):
            async def count(message: Msg) -> None:
                nonlocal seen
                data = message.data
                seen += len(unbatch(data)) if data[:4] == BATCH_MAGIC else bool(data)

            inbox = server.local_address.rsplit("#", 1)[1]
            await watcher.subscribe(inbox_subject(inbox), cb=count)
            await watcher.flush()
            sending = asyncio.ensure_future(client.send_many(frames))
            await asyncio.sleep(1.5)
            assert not sending.done(), "the sender waits for the reader"
            assert seen <= window, f"{seen} records reached a reader that read nothing"
            async with asyncio.timeout(30):
                got = [await server.recv() for _ in frames]
                await sending
            assert got == frames
    finally:
        await watcher.close()


# -- copies of a frame still in hand (JetStream redelivers it every ack deadline) --------


async def test_redeliveries_past_the_copies_held_never_settle_a_frame_in_hand(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """JetStream redelivers a message whose handler runs past the ack deadline, again
    and again. Past the copies the node holds (COPIES_HELD), acknowledging one would
    settle the message itself: lost if the node then crashed. It stays pending until
    the node is done with the frame; then the held copy's ack settles it (and every
    redelivery) and they stop."""
    from p2phost_nats_transport import _streams

    from p2phost_sdk import DeliveredFrame
    from p2phost_sdk.inbox import _connection

    service_or_skip("NATS", 4222)
    # Scaled down: a redelivery every 0.3 s, two copies held (5 s and 16 in the node).
    monkeypatch.setattr(_streams, "ACK_WAIT", 0.3)
    # As when the node's event loop is too busy to say "in progress" in time.
    monkeypatch.setattr(InProgress, "keep", _never_kept)
    monkeypatch.setattr(_connection, "COPIES_HELD", 2)
    case = TransportCase(make=lambda limit: NatsTransport(
        peer_id=Identity.generate().peer_id, max_frame_size=limit, durable=True),
        listen_address=lambda: URL, unreachable_address="", bad_address="",
        unknown_peer_address="")
    observer = await nats.connect(URL)
    try:
        js = observer.jetstream()
        async with TransportKit(case).pair() as (client, server), asyncio.timeout(30):
            stream = _streams.inbox_stream(server._endpoint.inbox)  # type: ignore[attr-defined]
            await client.send(b"slow")
            frame = await server.recv()  # its handler runs: not done yet
            assert isinstance(frame, DeliveredFrame) and bytes(frame) == b"slow"
            await asyncio.sleep(3.0)
            info = await js.consumer_info(stream, "node")
            assert (info.num_redelivered or 0) >= 1 and (info.num_ack_pending or 0) == 1, info
            assert (info.delivered.consumer_seq or 0) - (info.delivered.stream_seq or 0) >= 4, (
                "fewer redeliveries than the test needs (past the copies held)", info)
            frame.ack()
            for _ in range(50):
                info = await js.consumer_info(stream, "node")
                if not info.num_ack_pending:
                    break
                await asyncio.sleep(0.1)
            assert not info.num_ack_pending, info
            delivered = info.delivered.consumer_seq
            await asyncio.sleep(1.0)  # settled: no more redeliveries
            assert (await js.consumer_info(stream, "node")).delivered.consumer_seq == delivered
            assert (await js.stream_info(stream)).state.messages == 0
    finally:
        await observer.close()


async def _never_kept(self: InProgress) -> None:
    pass


async def test_what_the_node_holds_stays_in_progress_and_what_it_dropped_comes_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """JetStream delivers again what is not acknowledged within its ack wait: stored
    letters queued behind a slow handler came again every 5 s, each copy opened and
    dropped, a storm on a busy node. The reader keeps in progress what the node still
    holds; what the node dropped unacknowledged (gave up on) comes again after the ack
    wait, as before."""
    from urllib.parse import urlsplit

    from p2phost_nats_transport import _streams

    from p2phost_sdk.inbox import MediumAddress

    service_or_skip("NATS", 4222)
    monkeypatch.setattr(_streams, "ACK_WAIT", 1.5)  # scaled down from 5 s
    name = f"{Identity.generate().peer_id}-progress"  # short-lived: no accounts
    medium = NatsMedium(MediumAddress(URL, URL, urlsplit(URL), None), durable=True)
    held: list[object] = []
    deliveries = {b"held": 0, b"dropped": 0}

    async def deliver(data: bytes, token: object) -> None:
        deliveries[data] += 1
        if data == b"held":
            held.append(token)

    await medium.connect()
    try:
        await medium.create_inbox(name)
        await medium.open_inbox(name, deliver)
        await medium.append(name, [b"held", b"dropped"])
        await asyncio.sleep(6.0)  # four ack waits
        assert deliveries == {b"held": 1, b"dropped": deliveries[b"dropped"]}, deliveries
        assert deliveries[b"dropped"] >= 3, deliveries
        assert medium.in_progress.told >= 4
        await medium.ack(name, held)
        await medium._client.flush()
        js = medium._js
        assert js is not None
        # The server takes an ack in and removes the message from the work queue
        # afterwards: a flush returns before that (CI once saw 2 here).
        for _ in range(50):
            info = await js.stream_info(_streams.inbox_stream(name))
            if info.state.messages == 1:
                break
            await asyncio.sleep(0.1)
        assert info.state.messages == 1  # the dropped one
    finally:
        await medium.close(delete_inbox=True)


async def test_a_failure_telling_progress_is_logged_and_the_next_round_tells_again(
        caplog: pytest.LogCaptureFixture) -> None:
    # An error no one foresaw in one +WPI must not end the task that keeps every held
    # letter in progress for the inbox's life (the redelivery storm would come back).
    class Held:
        def __init__(self) -> None:
            self.calls = 0

        async def in_progress(self) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("unforeseen")

    held = Held()
    progress = InProgress(ack_wait=5.0)
    progress.add(held)  # type: ignore[arg-type]
    await progress.tell(older_than=0)
    assert "in progress failed" in caplog.text
    await progress.tell(older_than=0)
    assert held.calls == 2 and progress.told == 1
