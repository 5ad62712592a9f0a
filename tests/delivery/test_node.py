"""Acknowledged delivery between in-process nodes over real TCP on 127.0.0.1.

What needs no process kill: the outbox holding messages for a peer that is not there
yet (and across a sender restart), the full dead-letter store in both policies, acks
for unknown messages, the receiver deciding a topic's mode, sender-side dead letters,
and the handler's store rolled back when it raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from p2phost._delivery_settings import DeliverySettings
from p2phost._runtime import Kind, Node, decode, encode
from p2phost._runtime.delivery._acks import ack_frame
from p2phost_sdk import App, Delivery, Identity, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode
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
