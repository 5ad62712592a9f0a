"""Acknowledged delivery between in-process nodes over real TCP on 127.0.0.1.

What needs no process kill: the outbox holding messages for a peer that is not there
yet (and across a sender restart), the full dead-letter store in both policies, acks
for unknown messages, the receiver deciding a topic's mode, sender-side dead letters,
and the handler's store rolled back when it raises.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from p2phost._delivery_settings import DeliverySettings
from p2phost._runtime import Hello, Kind, Node, decode, encode
from p2phost._runtime.delivery._acks import ack_frame
from p2phost_sdk import App, Delivery, Identity, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode, TcpTransport
from tests.runtime.processes import free_port
from tests.runtime.rawpeer import RawPeer

FAST = Delivery("at-least-once", immediate_retries=1, delayed_retries=0)


class Keeper(App):
    """Handles ``kept`` (effectively-once): records bodies in its store; ``bad`` always
    fails after writing to the store; ``plain`` is at-most-once."""

    name = "keeper"

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    @handler("kept", delivery="effectively-once")
    async def kept(self, message: Message) -> None:
        assert message.store is not None
        self.bodies.append(message.body)
        message.store.put(f"b/{len(self.bodies)}", message.body)

    @handler("bad", delivery=FAST)
    async def bad(self, message: Message) -> None:
        assert message.store is not None
        message.store.put("half-done", True)
        raise ValueError(f"bad {message.body}")

    @handler("plain")
    async def plain(self, message: Message) -> None:
        self.bodies.append(message.body)


class Sender(App):
    """Declares ``kept`` acknowledged for its sends, handles nothing of it."""

    name = "sender"
    delivery = {"kept": "effectively-once", "elsewhere": "at-least-once"}

    @handler("unused")
    async def unused(self, message: Message) -> None:
        pass


Make = Callable[..., Awaitable[Node]]


@pytest.fixture
def kind() -> str:
    """The runtime tests' ``make_node`` over real TCP only."""
    return "tcp"


@pytest.fixture
def make(make_node: MakeNode) -> Make:
    """``await make(apps, state=..., listen=..., identity=..., **[delivery] settings)``."""
    async def start(apps: list[App], *, state: Path | None = None,
                    listen: list[str] | None = None, identity: Identity | None = None,
                    **settings: Any) -> Node:
        return await make_node(apps, listen=listen, identity=identity, state_dir=state,
                               delivery=DeliverySettings(**settings), drain_timeout=3.0)
    return start


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    await wait_until(check, timeout, "the expected delivery state")


async def test_the_outbox_keeps_messages_until_the_peer_comes_and_across_a_restart(
        make: Make, tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    receiver_id = Identity.generate()
    identity = Identity.generate()
    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=identity)
    for n in range(3):  # nobody listens there yet: kept, and the address is dialled on
        await sender.send(address, "kept", n)
    await sender.send(receiver_id.peer_id, "kept", 3)  # by peer id: waits for it
    assert sender.delivery.snapshot()["outbox"] == {"kept": 4}
    await sender.close()

    # A new run of the sender (same identity and state) and the receiver, at last.
    keeper = Keeper()
    await make([keeper], listen=[address], identity=receiver_id)
    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=identity)
    await until(lambda: sorted(keeper.bodies) == [0, 1, 2, 3])
    await until(lambda: sender.delivery.snapshot()["outbox"] == {})
    assert sender.delivery.stats.get("kept", "acked") == 4


@pytest.mark.parametrize(("keep", "kept", "said"), [
    ("newest", [b"1", b"2"], "dropped the oldest dead letter #1"),
    ("oldest", [b"0", b"1"], "dropped the new dead letter"),
])
async def test_a_full_dead_letter_store_says_so_and_keeps_as_configured(
        make: Make, caplog: pytest.LogCaptureFixture, keep: str, kept: list[bytes],
        said: str) -> None:
    receiver = await make([Keeper()], dead_letter_limit=2, dead_letter_keep=keep)
    sender = await make([], listen=[])
    peer = await sender.connect(receiver.addresses[0])
    with caplog.at_level(logging.ERROR, "p2phost.delivery"):
        for n in range(3):
            await sender.send(peer, "bad", n)
        await until(lambda: receiver.delivery.stats.get("bad", "dropped") == 1)
    assert receiver.delivery.dead is not None
    assert [d.body for d in receiver.delivery.dead.entries()] == kept
    assert receiver.delivery.stats.drop_reasons == {"dead-letter store full": 1}
    full = [r.message for r in caplog.records if "dead-letter store is full" in r.message]
    assert len(full) == 1 and said in full[0]
    assert await sender.delivery.settle(5) == 0, "a dropped dead letter is still acknowledged"
    # Each handler run wrote to its store before raising: none of it was kept.
    assert receiver.delivery.db is not None
    assert receiver.delivery.db.execute("SELECT COUNT(*) FROM app_state").fetchone()[0] == 0


async def test_a_full_store_says_so_for_unsent_messages_and_buried_payloads(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    """The outbox's dead letters and a bridge's buried payloads drop the oldest as the
    receiver's do: each drop said once and counted."""
    receiver = await make([Keeper()])
    sender = await make([Sender()], listen=[], dead_letter_limit=1)
    peer = await sender.connect(receiver.addresses[0])
    with caplog.at_level(logging.ERROR, "p2phost.delivery"):
        for n in (1, 2):  # the peer does not handle it: a dead letter of the outbox
            await sender.send(peer, "elsewhere", n)
            await until(functools.partial(dead_lettered, sender, n))
        buried = await sender.delivery.bury("foreign", b"{", source="mqtt://h/t",
                                            reason="not JSON")
    assert sender.delivery.dead is not None
    assert [d.id for d in sender.delivery.dead.entries()] == [buried]
    assert sender.delivery.stats.drop_reasons == {"dead-letter store full": 2}
    full = [r.message for r in caplog.records if "dead-letter store is full" in r.message]
    assert len(full) == 2 and "topic 'elsewhere'" in full[0] and "to " in full[0]
    assert "topic 'elsewhere'" in full[1], full


def dead_lettered(node: Node, count: int) -> bool:
    return node.delivery.stats.get("elsewhere", "dead_lettered") == count


async def test_a_flood_of_failing_messages_logs_a_line_per_peer_topic_and_window(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    receiver = await make([Keeper()])
    senders = [await make([], listen=[]) for _ in range(2)]
    many = 40
    with caplog.at_level(logging.WARNING, "p2phost.delivery"):
        for sender in senders:  # the second's lines are not hidden by the first's flood
            peer = await sender.connect(receiver.addresses[0])
            for n in range(many):
                await sender.send(peer, "bad", n)
        await until(lambda: receiver.delivery.stats.get("bad", "dead_lettered") == 2 * many)
        # Every one counted: 2 runs each (FAST), 1 retry each, every message a dead letter,
        # each failed for good (what p2phost_messages_failed_total and `top` show).
        assert receiver.delivery.stats.get("bad", "retried") == 2 * many
        assert receiver.delivery.stats.get("bad", "failed") == 2 * many
        assert receiver.delivery.dead is not None
        assert len(receiver.delivery.dead.entries()) == 2 * many
        await receiver.close()  # reports what was held back
    lines = [r for r in caplog.records if r.name == "p2phost.delivery"]
    for sender in senders:
        mine = [r for r in lines if sender.peer_id in r.getMessage()]
        (failed,) = [r for r in mine if r.getMessage().startswith("the 'bad' handler")]
        assert failed.exc_info is not None, "the first failure carries its traceback"
        (dead,) = [r for r in mine if "went to the dead-letter store" in r.getMessage()]
        assert dead.levelno == logging.ERROR and "ValueError: bad" in dead.getMessage()
        counts = sorted(r.getMessage() for r in mine if "were not logged" in r.getMessage())
        assert counts == [
            f"{many - 1} more dead letters ({sender.peer_id}, bad) in the last 10s were not "
            f"logged ({many} in all)",
            f"{2 * many - 1} more handler failures ({sender.peer_id}, bad) in the last 10s "
            f"were not logged ({2 * many} in all)"], counts
    assert len(lines) <= 10, [r.getMessage() for r in lines]


async def test_acks_for_unknown_messages_are_ignored_and_counted(make: Make) -> None:
    node = await make([Keeper()])
    raw = await RawPeer.connect("tcp", node.addresses[0])
    await raw.connection.send(ack_frame(1, [0x1234, 0x5678]))
    await until(lambda: node.delivery.stats.unknown_acks == 2)
    # The connection carries on: a message on it still reaches the handler.
    await raw.connection.send(encode(Kind.MESSAGE, 7, b"plain", b'"after"'))
    keeper = node._apps[0]
    assert isinstance(keeper, Keeper)
    await until(lambda: keeper.bodies == ["after"])
    await raw.connection.close()


async def test_a_flood_of_unknown_acks_logs_a_line_per_peer_and_window(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    node = await make([Keeper()])
    raw = await RawPeer.connect("tcp", node.addresses[0])
    with caplog.at_level(logging.INFO, "p2phost.delivery"):
        for frame in range(3):  # 3 frames of 8000 ids, none this node waits for
            await raw.connection.send(ack_frame(1, list(range(frame * 8000 + 1,
                                                              frame * 8000 + 8001))))
        await until(lambda: node.delivery.stats.unknown_acks == 24000)
    lines = [r.getMessage() for r in caplog.records if "acknowledgement" in r.getMessage()]
    assert len(lines) == 1, lines[:5]
    assert lines[0].startswith(f"ignored 8000 acknowledgements from {raw.identity.peer_id} ")
    await raw.connection.close()


async def test_made_up_topics_log_a_few_lines_per_peer_and_are_all_counted(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    node = await make([Keeper()])
    raw = await RawPeer.connect("tcp", node.addresses[0])
    many = 50
    with caplog.at_level(logging.WARNING, "p2phost.node"):
        for n in range(many):  # a topic of its own each: the per-topic memory alone
            await raw.connection.send(encode(Kind.MESSAGE, n + 1, f"made-up-{n}".encode(),
                                             b'"x"'))
        await until(lambda: node.delivery.stats.drop_reasons.get(
            "no app handles the topic") == many)
        await raw.connection.close()
        await node.close()
    lines = [r.getMessage() for r in caplog.records if raw.identity.peer_id in r.getMessage()]
    dropping = [line for line in lines if line.startswith("dropping messages from")]
    assert len(dropping) == 5, dropping
    assert f"{many - 5} more dropped topics ({raw.identity.peer_id}, no app) in the last " \
           f"10s were not logged ({many} in all)" in lines


async def test_a_malformed_ack_closes_only_its_connection(make: Make) -> None:
    node = await make([Keeper()])
    raw = await RawPeer.connect("tcp", node.addresses[0])
    await raw.connection.send(encode(Kind.ACK, 1, correlation_id=5, body=b"odd"))
    assert await raw.pings_until_closed() == 0
    other = await RawPeer.connect("tcp", node.addresses[0])
    await other.connection.close()


async def test_the_receiver_decides_the_mode(make: Make,
                                             caplog: pytest.LogCaptureFixture) -> None:
    keeper = Keeper()
    receiver = await make([keeper])
    sender = await make([Sender()], listen=[])
    peer = await sender.connect(receiver.addresses[0])
    # The sender wants "elsewhere" acknowledged, the peer does not handle it at all.
    await sender.send(peer, "elsewhere", 1)
    await until(lambda: sender.delivery.stats.get("elsewhere", "dead_lettered") == 1)
    assert sender.delivery.dead is not None
    letter = sender.delivery.dead.entries()[0]
    assert letter.direction == "out" and "does not handle topic 'elsewhere'" in letter.reason
    # A topic the peer takes at-most-once goes plainly, even if the sender declares it.
    with caplog.at_level(logging.WARNING, "p2phost.delivery"):
        await sender.send(peer, "plain", "hi")
    await until(lambda: keeper.bodies == ["hi"])
    # Counted as sent at most once, never acknowledged: it did not go through the outbox.
    assert sender.delivery.stats.get("plain", "sent") == 1
    assert sender.delivery.stats.get("plain", "acked") == 0
    assert sender.delivery.snapshot()["outbox"] == {}
    # A topic the peer acknowledges goes through the outbox without any declaration here.
    plain_sender = await make([], listen=[])
    peer = await plain_sender.connect(receiver.addresses[0])
    await plain_sender.send(peer, "kept", "acked")
    await until(lambda: plain_sender.delivery.stats.get("kept", "acked") == 1)


async def test_duplicates_are_acknowledged_again_and_dropped(make: Make) -> None:
    keeper = Keeper()
    receiver = await make([keeper])
    raw = await RawPeer.connect("tcp", receiver.addresses[0])
    frame = encode(Kind.MESSAGE, 42, b"kept", b'"once"')

    async def next_ack() -> int:
        async with asyncio.timeout(10):
            while True:
                envelope = decode(await raw.connection.recv())
                if envelope.kind is Kind.ACK:
                    return envelope.correlation_id

    await raw.connection.send(frame)
    assert await next_ack() == 42
    for _ in range(2):  # the sender missed the ACK: each copy is acknowledged again
        await raw.connection.send(frame)
        assert await next_ack() == 42
    assert keeper.bodies == ["once"]
    assert receiver.delivery.stats.get("kept", "duplicates") == 2
    await raw.connection.close()


async def test_publish_goes_through_the_outbox_to_peers_that_acknowledge(make: Make) -> None:
    keepers = [Keeper(), Keeper()]
    receivers = [await make([keeper]) for keeper in keepers]
    plain = await make([Keeper()], listen=[])  # handles "kept" too, but is not dialled
    sender = await make([], listen=[])
    for receiver in receivers:
        await sender.connect(receiver.addresses[0])
    assert await sender.publish("kept", "news") == 2
    await until(lambda: all(k.bodies == ["news"] for k in keepers))
    await until(lambda: sender.delivery.stats.get("kept", "acked") == 2)
    assert await plain.publish("kept", "nobody") == 0


class Slow(App):
    """Handles ``kept`` (at-least-once) only once ``release`` is set."""

    name = "slow"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bodies: list[Any] = []

    @handler("kept", delivery="at-least-once")
    async def kept(self, message: Message) -> None:
        await self.release.wait()
        self.bodies.append(message.body)


async def test_a_slow_receiver_is_not_buried_in_copies(make: Make) -> None:
    slow = Slow()
    receiver = await make([slow])
    sender = await make([Sender()], ack_timeout=0.1)
    peer = await sender.connect(receiver.addresses[0])
    for number in range(5):
        await sender.send(peer, "kept", number)
    await asyncio.sleep(1.5)
    # Each timeout doubles the next wait (0.1, 0.2, 0.4, 0.8 s...): 3 or 4 rounds of 5
    # copies in 1.5 s, where a fixed wait sent all 5 again every 0.1 s (15 rounds).
    resent = sender.delivery.stats.get("kept", "resent")
    assert 5 <= resent <= 20, resent
    slow.release.set()
    assert await sender.delivery.settle(10) == 0
    assert sorted(slow.bodies) == list(range(5))


async def test_delivery_modes_of_peers_making_up_identities_are_forgotten(make: Make) -> None:
    # A peer can make a new identity per connection and announce thousands of
    # acknowledged topics in each hello: what the node keeps of them goes with the
    # connection, and only topics the hello lists count.
    node = await make([Keeper()])
    own = set(node.delivery.topics)
    assert own == {"kept", "bad"}
    for round_ in range(20):
        connection = await TcpTransport().dial(node.addresses[0], timeout=5)
        listed = tuple(f"r{round_}/t{n}" for n in range(200))
        modes = {topic: "at-least-once" for topic in listed}
        modes.update({f"r{round_}/unlisted{n}": "effectively-once" for n in range(200)})
        hello = Hello(peer_id=Identity.generate().peer_id, codecs=("application/json",),
                      topics=listed, session="raw", nonce="raw", extra={"delivery": modes})
        await connection.send(hello.to_frame())
        assert decode(await connection.recv()).kind is Kind.HELLO
        await until(lambda: len(node.peers()) == 1)
        # While it is connected: its listed topics, none of those it does not list.
        assert node.delivery.topics == own | set(listed)
        await connection.close()
        await until(lambda: not node.peers())
        await until(lambda: node.delivery.topics == own)
    assert node.delivery.topics == own and len(node.delivery._announced) == 0


async def test_a_dead_letter_names_a_few_of_the_peers_topics(make: Make) -> None:
    # A peer may list up to 64 KiB of topics (a hello's bound): the reason of a letter
    # to it names a few, and counts the rest.
    sender = await make([Sender()])
    connection = await TcpTransport().dial(sender.addresses[0], timeout=5)
    peer = Identity.generate().peer_id
    topics = tuple(f"{n:04d}/" + "t" * 240 for n in range(250))
    await connection.send(Hello(peer_id=peer, codecs=("application/json",), topics=topics,
                                session="raw", nonce="raw").to_frame())
    assert decode(await connection.recv()).kind is Kind.HELLO
    await until(lambda: len(sender.peers()) == 1)
    await sender.send(peer, "elsewhere", 1)
    await until(lambda: sender.delivery.stats.get("elsewhere", "dead_lettered") == 1)
    assert sender.delivery.dead is not None
    reason = sender.delivery.dead.entries()[0].reason
    assert reason.startswith("the peer does not handle topic 'elsewhere' (its topics: "
                             f"{topics[0]}, {topics[1]}, ")
    assert reason.endswith(f"{topics[4]} and 245 more)") and len(reason) < 1500
    await connection.close()


async def test_the_outbox_keeps_no_pump_for_a_gone_peer_it_owes_nothing(make: Make) -> None:
    # A pump (and its task) per peer ever connected would grow with every identity a
    # peer makes up; one that sent and waits for acknowledgements keeps its own.
    keeper = Keeper()
    receiver = await make([keeper], listen=[f"tcp://127.0.0.1:{free_port()}"])
    sender = await make([Sender()])
    outbox = sender.delivery._outbox
    assert outbox is not None
    for _ in range(20):
        raw = await RawPeer.connect("tcp", sender.addresses[0])
        await until(lambda: len(sender.peers()) == 1)
        assert len(outbox._pumps) == 1
        await raw.connection.close()
        await until(lambda: not sender.peers() and not outbox._pumps)
    assert len(outbox._tasks) == 0
    # A real peer: its pump goes with it once everything is acknowledged, and comes back.
    for n in range(2):
        peer = await sender.connect(receiver.addresses[0])
        await sender.send(peer, "kept", n)
        await until(lambda n=n: sender.delivery.stats.get("kept", "acked") == n + 1)
        assert await sender.disconnect(peer)
        await until(lambda: not outbox._pumps)
    assert keeper.bodies == [0, 1]


async def test_the_peers_warned_about_are_bounded(make: Make,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # One warning per peer and topic taken at-most-once: peers with a new identity each
    # time must not grow what the node remembers of them.
    sender = await make([Sender()])
    sender.delivery._warned.most = 4
    for _ in range(10):
        connection = await TcpTransport().dial(sender.addresses[0], timeout=5)
        peer = Identity.generate().peer_id
        await connection.send(Hello(peer_id=peer, codecs=("application/json",),
                                    topics=("kept",), session="raw", nonce="raw").to_frame())
        assert decode(await connection.recv()).kind is Kind.HELLO
        await until(lambda: len(sender.peers()) == 1)
        with caplog.at_level(logging.WARNING, "p2phost.delivery"):
            await sender.send(peer, "kept", 1)
            await sender.send(peer, "kept", 2)  # (once per peer)
        await connection.close()
        await until(lambda: not sender.peers())
        assert 0 < len(sender.delivery._warned) <= 4
    warned = [r for r in caplog.records if "without acknowledgements" in r.getMessage()]
    assert len(warned) == 10


async def test_the_outbox_counts_the_frame_bytes_it_sends(make: Make) -> None:
    # p2phost_message_bytes_sent_total is "frame bytes of app messages sent": acknowledged
    # messages go out as the outbox's frames, and count as the plain path's do.
    receiver = await make([Keeper()], listen=[f"tcp://127.0.0.1:{free_port()}"])
    sender = await make([Sender()])
    peer = await sender.connect(receiver.addresses[0])
    for n in range(3):
        await sender.send(peer, "kept", "x" * n)
        await sender.send(peer, "plain", "x" * n)
    await until(lambda: sender.delivery.stats.get("kept", "acked") == 3)
    plain = sender.delivery.stats.get("plain", "bytes_sent")
    kept = sender.delivery.stats.get("kept", "bytes_sent")
    assert plain > 0 and kept == plain + 3 * (len("kept") - len("plain")), (kept, plain)
