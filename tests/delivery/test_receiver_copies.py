"""A copy of a message that comes while the first is being handled (a broker delivering a
stored record again after its ack wait) is acknowledged to its medium with the first
one's outcome, never before: its acknowledgement may settle the stored record itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from p2phost._delivery_settings import DeliverySettings
from p2phost._runtime import Node, NodeOptions
from p2phost._runtime.delivery._appstate import AppState
from p2phost._runtime.delivery._committer import Committer
from p2phost._runtime.delivery._deadletter import DeadLetters
from p2phost._runtime.delivery._dedupe import Dedupe
from p2phost._runtime.delivery._receiver import COPIES_HELD, Receiver
from p2phost._runtime.delivery._store import open_connections
from p2phost._runtime.messaging._mailbox import Mailbox
from p2phost._runtime.messaging._routes import Route, Work
from p2phost._runtime.messaging._stats import DeliveryStats
from p2phost._runtime.wire._envelope import Envelope, Kind, decode, encode
from p2phost_sdk import App, Delivery, DeliveryMode, Identity, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

for _name in ("redis-transport", "json-codec"):
    use_plugin_source(_name)

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_redis_transport import RedisTransport  # noqa: E402


class Json:
    content_type = "application/json"

    def decode(self, data: bytes) -> Any:
        return data.decode()


class Gate:
    """A handler that waits until let through, and fails when told to."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.fail = False
        self.runs = 0

    async def __call__(self, message: Message) -> None:
        self.runs += 1
        await self.open.wait()
        if self.fail:
            raise RuntimeError("failed on purpose")


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    db, writer, quick = open_connections(tmp_path / "delivery.db")
    yield db, writer, quick
    for connection in (db, writer, quick):
        connection.close()


async def receiver_with(parts: tuple[Any, ...], gate: Gate,
                        mode: DeliveryMode) -> tuple[Receiver, Route, Committer]:
    db, writer, quick = parts
    committer = Committer(db, writer, quick)

    async def process(peer: str, item: Work) -> None:
        await item.call(item.message)

    route = Route(handler=gate, mailbox=Mailbox("ledger", 16, process))
    policy = Delivery(mode, immediate_retries=0, delayed_retries=0)
    receiver = Receiver(committer=committer, dedupe=Dedupe(db, window=3600),
                        state=AppState(db), dead=DeadLetters(db), stats=DeliveryStats(),
                        policies={"entry": policy}, apps={"entry": "ledger"},
                        routes={"entry": route}, codecs={Json.content_type: Json()},
                        acknowledge=lambda *_: None)
    return receiver, route, committer


def envelope() -> Envelope:
    return decode(encode(Kind.MESSAGE, 7, b"entry", b'"body"'))


@pytest.mark.parametrize("mode", [DeliveryMode.EFFECTIVELY_ONCE, DeliveryMode.AT_LEAST_ONCE])
async def test_a_copy_is_acknowledged_to_the_medium_only_with_the_first_ones_outcome(
        parts: tuple[Any, ...], mode: DeliveryMode) -> None:
    gate = Gate()
    receiver, route, committer = await receiver_with(parts, gate, mode)
    channel = SimpleNamespace(peer_id="alice", codec=Json(), stored=True)
    acked: list[str] = []
    assert receiver.receive(channel, envelope(), lambda: acked.append("first"), route) is None
    await wait_until(lambda: gate.runs == 1, 10, "the handler running")
    for n in range(COPIES_HELD + 2):  # the broker delivers it again, and again
        receiver.receive(channel, envelope(), lambda n=n: acked.append(f"copy {n}"), route)
    assert acked == [], "a copy settled the stored record before the node was done"
    gate.open.set()
    await wait_until(lambda: len(acked) == 1 + COPIES_HELD, 10, "the outcome committed")
    assert gate.runs == 1
    # Those held are settled with it; the rest were let go (the broker has them again).
    assert acked == ["first", *(f"copy {n}" for n in range(COPIES_HELD))]
    await committer.close()


async def test_copies_of_a_message_given_up_are_not_acknowledged(
        parts: tuple[Any, ...]) -> None:
    gate = Gate()
    gate.fail = True  # no retries: it goes to the dead-letter store, an outcome
    receiver, route, committer = await receiver_with(parts, gate, DeliveryMode.EFFECTIVELY_ONCE)
    channel = SimpleNamespace(peer_id="alice", codec=Json(), stored=True)
    acked: list[str] = []
    receiver.receive(channel, envelope(), lambda: acked.append("first"), route)
    await wait_until(lambda: gate.runs == 1, 10, "the handler running")
    receiver.receive(channel, envelope(), lambda: acked.append("copy"), route)
    await committer.close()  # writes from now on fail: the outcome is not committed
    gate.open.set()
    await wait_until(lambda: ("alice", 7) not in receiver._busy, 10, "the message given up")
    assert receiver.dedupe.seen(("alice", 7), durable=False) is None  # not done: it comes again
    assert acked == [], "a copy of a message whose outcome was not committed was settled"


async def test_a_copy_that_is_a_record_of_its_own_is_acknowledged_at_once(
        parts: tuple[Any, ...]) -> None:
    """Only letters are held: a frame on a connection is never the record of another
    message (a resend is a new frame), so acknowledging it settles nothing else."""
    gate = Gate()
    receiver, route, committer = await receiver_with(parts, gate, DeliveryMode.AT_LEAST_ONCE)
    letter = SimpleNamespace(peer_id="alice", codec=Json(), stored=True)
    connection = SimpleNamespace(peer_id="alice", codec=Json(), stored=False)
    acked: list[str] = []
    receiver.receive(letter, envelope(), lambda: acked.append("first"), route)
    await wait_until(lambda: gate.runs == 1, 10, "the handler running")
    for n in range(COPIES_HELD + 2):
        receiver.receive(connection, envelope(), lambda n=n: acked.append(f"resent {n}"),
                         route)
    assert acked == [f"resent {n}" for n in range(COPIES_HELD + 2)]
    gate.open.set()
    await wait_until(lambda: acked[-1:] == ["first"], 10, "the outcome committed")
    await committer.close()

async def test_a_refused_letter_leaves_the_busy_one_of_its_key_busy(
        parts: tuple[Any, ...]) -> None:
    """A letter refused (the trust policy, a body that cannot be decoded) with the key of
    one being handled goes to the dead-letter store; the first stays busy, so a copy
    of it is still held for its outcome, not settled at once."""
    gate = Gate()
    receiver, route, committer = await receiver_with(parts, gate, DeliveryMode.AT_LEAST_ONCE)
    channel = SimpleNamespace(peer_id="alice", codec=Json(), stored=True)
    acked: list[str] = []
    receiver.receive(channel, envelope(), lambda: acked.append("first"), route)
    await wait_until(lambda: gate.runs == 1, 10, "the handler running")
    receiver.refuse(channel, envelope(), lambda: acked.append("refused"), "refused on purpose")
    await wait_until(lambda: acked == ["refused"], 10, "the refused one dead-lettered")
    receiver.receive(channel, envelope(), lambda: acked.append("copy"), route)
    assert acked == ["refused"], "a copy settled the stored record before the node was done"
    gate.open.set()
    await wait_until(lambda: acked == ["refused", "first", "copy"], 10, "the outcome committed")
    assert gate.runs == 1
    await committer.close()

# -- over a real medium ----------------------------------------------------------------

REDIS = "redis://127.0.0.1:6379/0"


class Slow(App):
    """Handles ``slow`` (at-least-once) once let through."""

    name = "slow"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.runs = 0

    @handler("slow", delivery="at-least-once")
    async def slow(self, message: Message) -> None:
        self.runs += 1
        await self.gate.wait()


class Resender(App):
    """Declares ``slow`` acknowledged for its sends."""

    name = "resender"
    delivery = {"slow": "at-least-once"}

    @handler("unused")
    async def unused(self, message: Message) -> None:
        pass


def redis_node(apps: list[App], state: Path, listen: list[str], **settings: Any) -> Node:
    identity = Identity.generate()
    return Node(identity, transports={"redis": RedisTransport(peer_id=identity.peer_id,
                                                              state_dir=state)},
                codecs={"application/json": JsonCodec()}, apps=apps,
                options=NodeOptions(listen=listen, state_dir=state, drain_timeout=3.0,
                                    delivery=DeliverySettings(**settings)))


@pytest.mark.services
async def test_a_senders_resends_past_those_held_leave_nothing_on_the_medium(
        tmp_path: Path) -> None:
    """A resend is a record of its own (a new frame): one past ``COPIES_HELD`` is
    acknowledged at once, not left pending on the inbox connection (which then never
    forgets it) and in the Redis stream for the rest of the run."""
    service_or_skip("Redis", 6379)
    app = Slow()
    receiver = redis_node([app], tmp_path / "receiver", [REDIS])
    # Resent every 10 ms (at most 80 ms apart with the back-off) while the handler waits.
    sender = redis_node([Resender()], tmp_path / "sender", [], ack_timeout=0.01)
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_timeout=5)
    inbox = f"p2phost:inbox:{receiver.peer_id}"
    try:
        await receiver.start()
        await sender.start()
        peer = await sender.connect(receiver.addresses[0])  # frames, not letters
        await sender.send(peer, "slow", "body")
        await wait_until(lambda: app.runs == 1, 10, "the handler running")
        await wait_until(
            lambda: receiver.stats()["topics"]["slow"]["duplicates"] > COPIES_HELD + 4, 30,
            "the sender's resends")
        app.gate.set()
        await wait_until(lambda: not sender.stats()["outbox"].get("slow"), 10,
                         "the sender acknowledged")
        await wait_until(lambda: client.xlen(inbox) == 0, 10,
                         "every record of the receiver's inbox acknowledged")
        assert app.runs == 1
    finally:
        await sender.close()
        await receiver.close()
        client.delete(inbox)
        client.close()
