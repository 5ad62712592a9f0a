"""Unit tests of the SDK's inbox connections over an in-memory medium that misbehaves on
purpose: it delivers records twice and out of order, loses them, and forgets what a
killed reader held, so every path of ordering, dedupe, flow control and resume runs.
(The real brokers run the same code in the plugin kits and the process tests.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from p2phost_sdk import (
    AddressError,
    ConnectionClosed,
    DeliveredFrame,
    Identity,
    TransportError,
)
from p2phost_sdk.inbox import (
    Deliver,
    InboxOptions,
    InboxTransport,
    Medium,
    MediumAddress,
    UnknownInbox,
)
from p2phost_sdk.inbox._journal import DoneSet, Journal, Resumable
from p2phost_sdk.inbox._record import Record, RecordType, data_records, decode


class Broker:
    """Inboxes in memory: each record stays until acknowledged."""

    def __init__(self, *, twice: bool = False, swap: bool = False, lose: int = 0) -> None:
        self.inboxes: dict[str, list[bytes | None]] = {}
        self.readers: dict[str, asyncio.Queue[int]] = {}
        self.twice, self.swap, self.lose = twice, swap, lose
        self.appended = 0
        #: Credits are taken and then lost (as a crash of the medium loses what it had
        #: not written to disk).
        self.lose_credits = False

    def append(self, name: str, records: Sequence[bytes]) -> None:
        if name not in self.inboxes:
            raise UnknownInbox(name)
        for record in records:
            self.appended += 1
            if self.lose and self.appended % self.lose == 0:
                continue
            self.inboxes[name].append(record)
            queue = self.readers.get(name)
            if queue is not None:
                queue.put_nowait(len(self.inboxes[name]) - 1)

    def crash(self, name: str) -> None:
        """The reader is killed: what it held but did not acknowledge comes again."""
        self.readers.pop(name, None)


class FakeMedium(Medium):
    """A medium over a :class:`Broker`, with its faults."""

    def __init__(self, broker: Broker, url: str) -> None:
        self.broker, self.url = broker, url
        self.reader: asyncio.Task[None] | None = None
        self.name = ""

    async def connect(self) -> None:
        pass

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        self.name = name
        inbox = self.broker.inboxes.setdefault(name, [])
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index, record in enumerate(inbox):  # unacknowledged first, as after a crash
            if record is not None:
                queue.put_nowait(index)
        self.broker.readers[name] = queue
        self.reader = asyncio.get_running_loop().create_task(self._read(queue, deliver))

    async def _read(self, queue: asyncio.Queue[int], deliver: Deliver) -> None:
        held: int | None = None
        while True:
            index = await queue.get()
            if self.broker.swap and held is None and queue.qsize():
                held = index  # deliver the next one first
                continue
            for one in ([index, held] if held is not None else [index]):
                record = self.broker.inboxes[self.name][one]
                if record is not None:
                    await deliver(record, one)
                    if self.broker.twice:
                        await deliver(record, one)
            held = None

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        self.broker.append(name, records)

    async def append_credits(self, name: str, records: Sequence[bytes]) -> None:
        if not self.broker.lose_credits:
            self.broker.append(name, records)

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        for index in tokens:
            self.broker.inboxes[name][index] = None

    async def close(self, *, delete_inbox: bool) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        if delete_inbox:
            self.broker.inboxes.pop(self.name, None)
            self.broker.readers.pop(self.name, None)


class FakeTransport(InboxTransport):
    schemes = ("fake",)
    default_port = 1
    broker = Broker()

    def make_medium(self, address: MediumAddress) -> Medium:
        return FakeMedium(self.broker, address.public)


def transport(broker: Broker, state: Path | None = None, peer_id: str | None = None,
              **options: Any) -> FakeTransport:
    made = FakeTransport(peer_id=peer_id or Identity.generate().peer_id, state_dir=state,
                         options=InboxOptions(**options))
    made.broker = broker
    return made


async def pair(server: FakeTransport, client: FakeTransport) -> tuple[Any, Any, Any]:
    accepted: asyncio.Queue[Any] = asyncio.Queue()
    listener = await server.listen("fake://medium", accepted.put)
    dialled = await client.dial(listener.addresses[0], timeout=2)
    return dialled, await asyncio.wait_for(accepted.get(), 2), listener


async def take(connection: Any, count: int) -> list[bytes]:
    got = []
    for _ in range(count):
        frame = await asyncio.wait_for(connection.recv(), 5)
        if isinstance(frame, DeliveredFrame):
            frame.ack()
        got.append(bytes(frame))
    return got


@pytest.mark.parametrize("faults", [{"twice": True}, {"swap": True},
                                    {"twice": True, "swap": True}])
async def test_duplicates_and_swaps_reach_the_node_once_in_order(
        faults: dict[str, bool]) -> None:
    broker = Broker(**faults)
    server, client = transport(broker), transport(broker)
    dialled, accepted, _ = await pair(server, client)
    frames = [f"frame {n}".encode() for n in range(300)]
    sending = asyncio.ensure_future(dialled.send_many(frames))
    assert await take(accepted, 300) == frames
    await sending
    await accepted.send(b"back")
    assert await take(dialled, 1) == [b"back"]
    await asyncio.sleep(0.05)  # the acknowledgements are batched
    inbox = broker.inboxes[server.peer_id]
    assert not [r for r in inbox if r is not None], "every record was acknowledged"
    await client.close()
    await server.close()


@pytest.mark.parametrize("windows", [(8, 8), (8, 64), (64, 8)])
async def test_a_slow_reader_holds_the_sender_to_the_smaller_window(
        windows: tuple[int, int]) -> None:
    broker = Broker(swap=True)
    server, client = transport(broker, window=windows[0]), transport(broker, window=windows[1])
    dialled, accepted, _ = await pair(server, client)
    sending = asyncio.ensure_future(dialled.send_many([b"x"] * 40))
    await asyncio.sleep(0.1)
    assert broker.appended <= 1 + 8 + 1, "OPEN, a window of frames (the smaller), the ACCEPT"
    assert not sending.done()
    await take(accepted, 40)  # and none of them counts as past the window
    await asyncio.wait_for(sending, 2)
    back = asyncio.ensure_future(accepted.send_many([b"y"] * 40))
    assert await take(dialled, 40) == [b"y"] * 40
    await asyncio.wait_for(back, 2)
    await client.close()
    await server.close()


async def test_a_medium_that_splits_the_window_gets_half_a_window_per_append(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader credits every half window: the second half goes in while it takes the first.
    monkeypatch.setattr(FakeMedium, "split_window", True)
    sizes: list[tuple[str, int]] = []
    append = FakeMedium.append

    async def counted(self: FakeMedium, name: str, records: Sequence[bytes]) -> None:
        sizes.append((name, len(records)))
        await append(self, name, records)

    monkeypatch.setattr(FakeMedium, "append", counted)
    broker = Broker(swap=True)
    server, client = transport(broker, window=16), transport(broker, window=16)
    dialled, accepted, _ = await pair(server, client)
    frames = [f"frame {n}".encode() for n in range(100)]
    sending = asyncio.ensure_future(dialled.send_many(frames))
    assert await take(accepted, 100) == frames
    await asyncio.wait_for(sending, 2)
    to_server = [size for name, size in sizes if name == server.peer_id]
    assert to_server[0] == 1 and sum(to_server[1:]) == 100, to_server  # the OPEN, the frames
    assert max(to_server[1:]) == 8, "half the window (16) per append at most"
    await client.close()
    await server.close()


async def test_a_sender_past_the_window_is_cut_off() -> None:
    broker = Broker()
    server, client = transport(broker, window=8), transport(broker, window=8)
    dialled, accepted, _ = await pair(server, client)
    # Frames 1 to 20 without waiting for credit, as a sender that ignores it would.
    broker.append(server.peer_id, data_records(True, dialled.connection_id, dialled.out_epoch,
                                               1, client.peer_id, "", [b"z"] * 20))
    with pytest.raises(TransportError, match="sent more than its flow-control window"):
        await take(accepted, 9)
    await client.close()
    await server.close()


async def test_a_burst_is_handed_over_at_once_in_order() -> None:
    broker = Broker(twice=True, swap=True)
    server, client = transport(broker, window=64), transport(broker, window=64)
    dialled, accepted, _ = await pair(server, client)
    frames = [f"frame {n}".encode() for n in range(200)]
    sending = asyncio.ensure_future(dialled.send_many(frames))
    got: list[bytes] = []
    while len(got) < len(frames):
        burst = await asyncio.wait_for(accepted.recv_many(), 5)
        assert 1 <= len(burst) <= 64, "at least one frame, at most a window"
        for frame in burst:
            frame.ack()
        got.extend(bytes(frame) for frame in burst)
    assert got == frames, "each frame once, in order, through duplicates and swaps"
    await asyncio.wait_for(sending, 5)
    await client.close()
    await server.close()


async def test_credits_the_medium_lost_are_sent_again_after_it_reconnects() -> None:
    broker = Broker()
    server, client = transport(broker, window=8), transport(broker, window=8)
    dialled, accepted, _ = await pair(server, client)
    broker.lose_credits = True
    sending = asyncio.ensure_future(dialled.send_many([b"x"] * 12))
    assert len(await take(accepted, 8)) == 8
    await asyncio.sleep(0.3)
    assert not sending.done(), "the credit for the window was lost: the sender waits"
    broker.lose_credits = False
    (endpoint,) = server._endpoints.values()
    endpoint.medium.reconnects += 1  # as a medium does once it has its reader back
    assert len(await take(accepted, 4)) == 4
    await asyncio.wait_for(sending, 3)
    await client.close()
    await server.close()


async def test_a_lost_record_closes_the_connection_with_a_clear_error() -> None:
    broker = Broker()
    server, client = transport(broker, gap_timeout=0.3), transport(broker)
    dialled, accepted, _ = await pair(server, client)
    broker.lose = 3  # from now on every third record is lost
    await dialled.send_many([b"a", b"b", b"c", b"d"])
    with pytest.raises(TransportError, match="never arrived"):
        await take(accepted, 4)
    await client.close()
    await server.close()


async def test_an_unknown_peer_and_a_closed_connection_are_clear() -> None:
    broker = Broker()
    server, client = transport(broker), transport(broker)
    with pytest.raises(TransportError, match="no node with that peer id"):
        await client.dial(f"fake://medium#{Identity.generate().peer_id}", timeout=1)
    dialled, accepted, _ = await pair(server, client)
    await dialled.send(b"last")
    await dialled.close()
    assert await take(accepted, 1) == [b"last"]
    with pytest.raises(ConnectionClosed):
        await accepted.recv()
    with pytest.raises(ConnectionClosed):
        await dialled.send(b"after")
    await client.close()
    await server.close()


async def test_a_killed_listener_resumes_its_connections(tmp_path: Path) -> None:
    broker = Broker()
    server = transport(broker, tmp_path)
    client = transport(broker)
    dialled, accepted, _ = await pair(server, client)
    await dialled.send(b"hello from the dialler")
    assert await take(accepted, 1) == [b"hello from the dialler"]
    await accepted.send(b"hello from the listener")
    assert await take(dialled, 1) == [b"hello from the listener"]
    await dialled.send_many([f"note {n}".encode() for n in range(10)])
    done = await take(accepted, 4)
    held = await asyncio.wait_for(accepted.recv(), 2)  # taken, never finished
    assert held == b"note 4"

    # Killed: no CLOSE, no acknowledgement of what it held; the same node starts again.
    broker.crash(server.peer_id)
    for endpoint in server._endpoints.values():
        for task in [*endpoint._tasks._tasks, endpoint.medium.reader]:  # type: ignore[attr-defined]
            task.cancel()
    again = transport(broker, tmp_path, peer_id=server.peer_id)
    accepted_again: asyncio.Queue[Any] = asyncio.Queue()
    await again.listen("fake://medium", accepted_again.put)
    await dialled.send(b"note 10")  # the dialler never noticed
    resumed = await asyncio.wait_for(accepted_again.get(), 2)
    assert await take(resumed, 1) == [b"hello from the dialler"], "the handshake replayed"
    assert await take(resumed, 7) == [f"note {n}".encode() for n in range(4, 11)]
    assert done == [f"note {n}".encode() for n in range(4)]
    await resumed.send(b"the new run's hello")  # already known to the dialler: not sent
    await resumed.send(b"carrying on")
    assert await take(dialled, 1) == [b"carrying on"]
    await client.close()
    await again.close()


@pytest.mark.parametrize("order", ["in order", "one left unfinished"])
async def test_a_resumed_listener_gives_back_the_room_its_killed_run_used(
        tmp_path: Path, order: str) -> None:
    """The dialler's window was full of frames the listener finished before it was killed,
    and the credit for them was lost with the process (the journal is written at once,
    credits and acknowledgements go out a moment later). The resumed connection takes
    none of them again (nor, but one, when one was left unfinished): it must still give
    the dialler its room back, or the dialler waits for credit forever (and a node behind
    it for acknowledgements it cannot ask for again)."""
    broker = Broker()
    server, client = transport(broker, tmp_path, window=8), transport(broker, window=8)
    dialled, accepted, _ = await pair(server, client)
    (endpoint,) = server._endpoints.values()
    first = [b"first", b"note 0", b"note 1", b"note 2"]
    await dialled.send_many(first)
    assert await take(accepted, 4) == first
    await asyncio.sleep(0.1)  # the credit for those four arrives
    # From now on the listener's credits and medium acknowledgements never leave it,
    # as when it is killed before its background tasks sent them.
    endpoint.control = lambda connection, record: None  # type: ignore[method-assign]
    endpoint.control_to = lambda inbox, record: None  # type: ignore[method-assign]
    endpoint.ack = lambda tokens: None  # type: ignore[method-assign]
    notes = [f"note {n}".encode() for n in range(3, 11)]
    await dialled.send_many(notes)  # the window's worth
    frames = [await asyncio.wait_for(accepted.recv(), 2) for _ in notes]
    assert [bytes(f) for f in frames] == notes
    unfinished = frames[0] if order == "one left unfinished" else None
    for frame in frames:
        if frame is not unfinished:
            frame.ack()  # done: in the journal
    sending = asyncio.ensure_future(dialled.send(b"after the restart"))
    await asyncio.sleep(0.1)
    assert not sending.done(), "the window is full: the dialler waits for credit"

    broker.crash(server.peer_id)
    for task in [*endpoint._tasks._tasks, endpoint.medium.reader]:  # type: ignore[attr-defined]
        task.cancel()
    again = transport(broker, tmp_path, peer_id=server.peer_id, window=8)
    accepted_again: asyncio.Queue[Any] = asyncio.Queue()
    await again.listen("fake://medium", accepted_again.put)
    resumed = await asyncio.wait_for(accepted_again.get(), 2)
    expected = [b"first", *([b"note 3"] if unfinished else []), b"after the restart"]
    assert await take(resumed, len(expected) - 1) == expected[:-1]
    await asyncio.wait_for(sending, 2)
    assert await take(resumed, 1) == expected[-1:]
    await client.close()
    await again.close()


def test_the_journal_keeps_what_was_done_across_a_compaction(tmp_path: Path) -> None:
    done = DoneSet()
    for seq in (1, 2, 4, 3, 7):
        done.add(seq)
    assert (done.watermark, done.above) == (4, {7})
    assert 3 in done and 7 in done and 5 not in done

    journal = Journal(tmp_path / "inbox.journal")
    assert journal.load() == {}
    entry = Resumable(b"c" * 16, "peer", "inbox", 7, b"opening frame")
    journal.opened(entry)
    for seq in [*range(1, 20_000), 20_005]:
        journal.done(entry.connection, seq)
    journal.opened(Resumable(b"d" * 16, "other", "", 1, b"x"))
    journal.closed(b"d" * 16)
    journal.close()
    loaded = Journal(tmp_path / "inbox.journal").load()
    assert list(loaded) == [b"c" * 16]
    again = loaded[b"c" * 16]
    assert (again.opening, again.epoch, again.done.watermark, again.done.above) == (
        b"opening frame", 7, 19_999, {20_005})
    assert len((tmp_path / "inbox.journal").read_text().splitlines()) < 10, "compacted"


@pytest.mark.parametrize("inbox", ["", "reply-inbox"])
def test_data_records_are_the_bytes_record_encode_makes(inbox: str) -> None:
    payloads = [b"a", b"", b"x" * 300]
    sender = Identity.generate().peer_id
    records = data_records(True, b"c" * 16, 7, 41, sender, inbox, payloads)
    assert records == [Record(RecordType.DATA, True, b"c" * 16, 7, 41 + i, sender, payload,
                              inbox).encode() for i, payload in enumerate(payloads)]
    assert [decode(r).seq for r in records] == [41, 42, 43]


def forged_credit(dialled: Any, seq: int) -> bytes:
    """A CREDIT for the dialler's frames, as anyone who may append to its inbox can make
    (the connection id and epoch are in every record's header on the medium)."""
    return Record(RecordType.CREDIT, False, dialled.connection_id, dialled.out_epoch, seq,
                  dialled.remote_peer_id).encode()


async def test_a_forged_credit_beyond_what_was_sent_does_not_lift_the_window() -> None:
    broker = Broker()
    server, client = transport(broker, window=8), transport(broker, window=8)
    dialled, accepted, _ = await pair(server, client)
    broker.append(dialled._endpoint.inbox, [forged_credit(dialled, 10**12)])
    await asyncio.sleep(0.05)
    sending = asyncio.ensure_future(dialled.send_many([b"x"] * 100))
    await asyncio.sleep(0.2)
    assert broker.appended <= 1 + 1 + 1 + 8, "OPEN, ACCEPT, the forgery, a window"
    assert not sending.done()
    assert len(await take(accepted, 100)) == 100
    await asyncio.wait_for(sending, 3)
    await client.close()
    await server.close()


async def test_forged_credits_cannot_make_a_sender_overrun_a_slow_receiver() -> None:
    # A third party credits every frame the dialler sent while the listener's node reads
    # none: the dialler goes on sending, and the listener must not hold it all.
    broker = Broker()
    server, client = transport(broker, window=8), transport(broker, window=8)
    dialled, accepted, _ = await pair(server, client)
    sending = asyncio.ensure_future(dialled.send_many([b"y" * 1000] * 2000))
    for _ in range(300):
        broker.append(dialled._endpoint.inbox, [forged_credit(dialled, dialled._out_seq)])
        await asyncio.sleep(0.001)
        if sending.done():
            break
    assert len(accepted._ready) + len(accepted._early) <= 2 * 8 + 1, \
        "the receiver holds at most twice its window of frames"
    with pytest.raises(TransportError, match="flow-control window"):
        await take(accepted, 2000)
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    await client.close()
    await server.close()


async def test_a_peer_that_ignores_its_window_fails_its_connection() -> None:
    # A hostile peer appends its frames in order past every credit, straight to the inbox.
    broker = Broker()
    server, client = transport(broker, window=8), transport(broker, window=8)
    dialled, accepted, _ = await pair(server, client)
    await dialled.send(b"hello")
    records = data_records(True, dialled.connection_id, dialled.out_epoch, 2,
                           client.peer_id, dialled._endpoint.inbox_field, [b"z"] * 500)
    broker.append(server.peer_id, records)
    await asyncio.sleep(0.1)
    assert len(accepted._ready) <= 2 * 8 + 1
    with pytest.raises(TransportError, match="flow-control window"):
        await take(accepted, 501)
    await client.close()
    await server.close()


class RecordsMedium(FakeMedium):
    """A medium that says which stored record a token settles (its index)."""

    def record_of(self, token: Any) -> Any:
        return token


async def test_copies_past_those_held_never_settle_the_frame_before_it_is_done() -> None:
    """Redeliveries of a frame the node still works on (JetStream's, every ack deadline)
    past the copies it holds are let go unacknowledged: an ack would settle the record
    itself. Repeated appends of it (records of their own) are acknowledged at once; the
    frame's record is settled when the node is done."""
    from p2phost_sdk.inbox._connection import COPIES_HELD

    broker = Broker()
    server, client, accepted, frame, record, index = await _frame_in_hand(broker)
    inbox = broker.inboxes[server.peer_id]
    for _ in range(COPIES_HELD * 3):  # redelivered: the same stored record
        accepted.receive(decode(record), index)
    broker.append(server.peer_id, [record] * (COPIES_HELD * 3))  # appended again
    await asyncio.sleep(0.3)
    assert inbox[index] is not None, "a copy's ack settled the frame in hand"
    assert inbox[-1] is None, "a repeated append past the held copies was kept"
    frame.ack()
    await asyncio.sleep(0.3)
    assert all(r is None for r in inbox[index:]), "the frame and its held copies acked"
    await client.close()
    await server.close()


async def _frame_in_hand(broker: Broker) -> tuple[Any, Any, Any, Any, Any, int]:
    """A pair whose accepting side's node works on frame ``slow``: (server, client,
    the accepted connection, the frame, its record, the record's token)."""
    server, client = transport(broker), transport(broker)
    server.make_medium = lambda address: RecordsMedium(broker, address.public)  # type: ignore[method-assign]
    dialled, accepted, _ = await pair(server, client)
    await dialled.send(b"slow")
    frame = await asyncio.wait_for(accepted.recv(), 5)  # a handler runs: not done
    inbox = broker.inboxes[server.peer_id]
    index = next(i for i, r in enumerate(inbox) if r is not None and r.endswith(b"slow"))
    return server, client, accepted, frame, inbox[index], index


async def test_a_connection_cut_off_for_replaying_never_settles_a_frame_in_hand() -> None:
    """After a connection was cut off (a sender replaying records), redeliveries of a
    frame the node still works on are let go unacknowledged, as copies past those held."""
    broker = Broker()
    server, client, accepted, frame, record, index = await _frame_in_hand(broker)
    accepted._replaying = True
    accepted.receive(decode(record), index)
    await asyncio.sleep(0.3)
    assert broker.inboxes[server.peer_id][index] is not None, "a copy's ack settled the frame"
    frame.ack()
    await asyncio.sleep(0.3)
    assert broker.inboxes[server.peer_id][index] is None
    await client.close()
    await server.close()


async def test_a_closed_connection_never_settles_a_frame_in_hand_with_a_copy() -> None:
    """The node closes a connection while a handler still works on one of its frames:
    a redelivery of that frame is not acknowledged (it would settle the frame); once
    the frame is done it is, and later records of the connection are acked at once."""
    broker = Broker()
    server, client, accepted, frame, record, index = await _frame_in_hand(broker)
    endpoint = accepted._endpoint
    await accepted.close()
    await endpoint._router.deliver(record, index)
    await asyncio.sleep(0.3)
    assert broker.inboxes[server.peer_id][index] is not None, "a copy's ack settled the frame"
    frame.ack()
    await asyncio.sleep(0.3)
    assert broker.inboxes[server.peer_id][index] is None
    assert not endpoint.closing, "a closed connection with all frames done is kept"
    await client.close()
    await server.close()


async def test_handled_counts_reach_the_disk_while_the_node_runs(tmp_path: Path) -> None:
    """`p2phost inbox stats` reads the counts file: a running node's handled letters are
    there within COUNTS_DELAY, in one write (the outsider report, D3)."""
    from p2phost_sdk.inbox._letters import COUNTS_DELAY, LetterJournal, read_counts

    journal = LetterJournal(tmp_path / "inbox.letters")
    for _ in range(3):
        journal.count("handled")
    assert read_counts(journal.path) == {}
    await asyncio.sleep(COUNTS_DELAY + 0.3)
    assert read_counts(journal.path) == {"handled": 3}
    journal.count("handled")
    journal.close()
    assert read_counts(journal.path) == {"handled": 4}


class PickyTransport(FakeTransport):
    """A medium that refuses a URL with a path, as media written before AddressError did."""

    def make_medium(self, address: MediumAddress) -> Medium:
        if address.parts.path not in ("", "/"):
            raise TransportError(f"bad address {address.public!r}: expected fake://HOST "
                                 "(no path)")
        return super().make_medium(address)


@pytest.mark.parametrize(("address", "says"), [
    ("tcp://medium", "expected fake://HOST:PORT"),
    ("fake://medium:notaport", "the port is not 0-65535"),
    ("fake://::1:7400", "an IPv6 host goes in brackets: fake://[::1]:7400"),
    ("fake://[::1:7400", "Invalid IPv6 URL"),  # an error, not a traceback from urlsplit
    ("fake://", "no host"),
    ("fake://medium#nobody", "'nobody' after '#' is not a peer id"),
    ("fake://medium/a/path", "expected fake://HOST (no path)"),  # the medium's own check
])
def test_check_address_raises_address_error_before_anything_connects(
        address: str, says: str) -> None:
    picky = PickyTransport(peer_id=Identity.generate().peer_id, options=InboxOptions())
    with pytest.raises(AddressError) as caught:
        picky.check_address(address)
    assert caught.value.address == address and says in str(caught.value)
    assert str(caught.value).count("bad address") == 1
    assert caught.value.expected.startswith("fake://")
    picky.check_address("fake://medium")  # well formed: no error
    picky.check_address(f"fake://medium#{Identity.generate().peer_id}")


def test_an_upper_case_scheme_is_the_same_medium() -> None:
    # The host serves NATS://... with the nats transport (schemes are case-insensitive,
    # as doctor reads them): the transport takes it, as the same medium, not as "expected
    # nats://HOST:PORT" at start while doctor finds no problem.
    picky = PickyTransport(peer_id=Identity.generate().peer_id, options=InboxOptions())
    picky.check_address("FAKE://medium")
    assert picky.parse("Fake://medium").public == picky.parse("fake://medium").public


class SlowHandshakeMedium(FakeMedium):
    """A broker that answers a connect after 1.5 s, as a loaded machine's broker does."""

    async def connect(self) -> None:
        await asyncio.sleep(1.5)


class SlowHandshakeTransport(FakeTransport):
    def make_medium(self, address: MediumAddress) -> Medium:
        return SlowHandshakeMedium(self.broker, address.public)


async def test_a_dial_waits_for_a_slow_broker_handshake_within_its_timeout() -> None:
    """A dial's connect is bounded by the dial's timeout, not cut at 1 s: a slow CONNACK
    under load (MQTT, test_a_frame_of_the_maximum_size_passes) is not an unreachable
    broker."""
    broker = Broker()
    server = SlowHandshakeTransport(peer_id=Identity.generate().peer_id)
    server.broker = broker
    client = SlowHandshakeTransport(peer_id=Identity.generate().peer_id)
    client.broker = broker
    dialled, accepted, _ = await pair(server, client)  # dials with a 2 s timeout
    await dialled.send(b"hello")
    assert await take(accepted, 1) == [b"hello"]
    await client.close()
    await server.close()
