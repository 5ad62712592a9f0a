"""The outbox redials a peer id it holds messages for (docs/delivery.md, "Connections").

The pattern the library teaches, ``peer = await node.connect(address)`` then
``node.send(peer, ...)``, files messages under the peer id: when the connection is lost
or the sender restarts, the node must dial the peer again by itself, at the addresses it
knew it by, and stop once nothing waits for it. In-process nodes over real TCP.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from p2phost._runtime import Node
from p2phost._runtime.delivery._check import unreachable
from p2phost_sdk import App, Backoff, Identity, Message, PeerRecord, PeerUnavailable, handler
from tests.delivery.test_journal import kill_a_sender
from tests.delivery.test_node import Keeper, Make, Sender, Slow, until
from tests.delivery.test_node import kind as kind  # (the fixtures, over tcp)
from tests.delivery.test_node import make as make
from tests.runtime.conftest import MakeNode
from tests.runtime.processes import free_port

#: Seconds a restarted peer may take to be redialled and served (the dialler's backoff
#: reaches a few seconds while the peer is down; room for a loaded machine).
BOUND = 20.0


def outbox(node: Node) -> Any:
    return node.delivery.snapshot()["outbox"]


class Lost(NamedTuple):
    """A sender, and the peer it reached by address and then lost."""

    address: str
    receiver_id: Identity
    sender: Node
    peer: str


async def lost_peer(make: Make, tmp_path: Path, *, acked: int,
                    sender_id: Identity | None = None) -> Lost:
    """A receiver at a fresh address; a sender that connects to it there, sends ``acked``
    messages to its peer id (all acknowledged); then the receiver closes."""
    address = f"tcp://127.0.0.1:{free_port()}"
    receiver_id = Identity.generate()
    receiver = await make([Keeper()], listen=[address], identity=receiver_id)
    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=sender_id)
    peer = await sender.connect(address)
    for n in range(acked):
        await sender.send(peer, "kept", n)
    await until(lambda: outbox(sender) == {})
    await receiver.close()  # lost: the peer is gone
    await until(lambda: not sender.peers())
    return Lost(address, receiver_id, sender, peer)


async def test_messages_to_a_peer_id_reach_it_after_it_restarts(
        make: Make, tmp_path: Path) -> None:
    address, receiver_id, sender, peer = await lost_peer(make, tmp_path, acked=3)
    for n in range(3, 8):  # sent to the peer id while it is down: they wait
        await sender.send(peer, "kept", n)
    assert outbox(sender) == {"kept": 5}
    await asyncio.sleep(0.5)
    keeper = Keeper()  # the same peer, at the same address, again
    await make([keeper], listen=[address], identity=receiver_id)
    await until(lambda: sorted(keeper.bodies) == [3, 4, 5, 6, 7], BOUND)
    await until(lambda: outbox(sender) == {})


async def test_a_peer_whose_dial_failed_is_dialled_behind_the_others_until_it_answers(
        make: Make, tmp_path: Path) -> None:
    """(Their order: test_redial_races.py.) A failed dial puts the peer behind; the
    connection that delivers its messages puts it back in line."""
    address, receiver_id, sender, peer = await lost_peer(make, tmp_path, acked=1)
    await sender.send(peer, "kept", 1)
    await until(lambda: peer in sender._dialler._failing, BOUND)
    keeper = Keeper()
    await make([keeper], listen=[address], identity=receiver_id)
    await until(lambda: keeper.bodies == [1], BOUND)
    assert peer not in sender._dialler._failing


async def test_a_restarted_sender_dials_the_peer_ids_it_holds_messages_for(
        make: Make, tmp_path: Path) -> None:
    sender_id = Identity.generate()
    address, receiver_id, sender, peer = await lost_peer(make, tmp_path, acked=2,
                                                         sender_id=sender_id)
    for n in range(2, 6):
        await sender.send(peer, "kept", n)
    await sender.close()  # with 4 messages for the peer id in its outbox

    keeper = Keeper()
    await make([keeper], listen=[address], identity=receiver_id)
    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=sender_id)
    assert outbox(sender) == {"kept": 4}
    await until(lambda: sorted(keeper.bodies) == [2, 3, 4, 5], BOUND)
    await until(lambda: outbox(sender) == {})


async def test_a_peer_is_no_longer_dialled_once_nothing_waits_for_it(
        make: Make, tmp_path: Path) -> None:
    address, receiver_id, sender, peer = await lost_peer(make, tmp_path, acked=2)
    targets = sender._dialler.targets
    assert peer not in targets  # gone, but owed nothing: not dialled
    await sender.send(peer, "kept", 2)
    assert peer in targets  # owed a message: dialled
    keeper = Keeper()
    receiver = await make([keeper], listen=[address], identity=receiver_id)
    await until(lambda: keeper.bodies == [2], BOUND)
    await until(lambda: outbox(sender) == {} and peer not in targets)
    # Lost again, owed nothing: not dialled (no dial storm for peers done with).
    await receiver.close()
    await until(lambda: not sender.peers())
    dials = targets.counters["dials"]
    await asyncio.sleep(3.0)
    assert targets.counters["dials"] == dials
    assert peer not in targets
    # Its address is kept, though: a later send to the peer id dials it there.
    assert sender.delivery.db is not None
    assert sender.delivery.db.execute("SELECT peer FROM peer_address").fetchall() == [(peer,)]



async def test_a_restarted_sender_dials_a_peer_id_it_reached_in_an_earlier_run(
        make: Make, tmp_path: Path) -> None:
    """Run 1 connects by address, sends, everything is acknowledged, it stops; run 2
    (same state) only sends to the peer id: the node dials it where it last knew it.
    (Its address went with the last message acknowledged: run 2 waited for ever.)"""
    sender_id, keeper = Identity.generate(), Keeper()
    receiver = await make([keeper])
    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=sender_id)
    peer = await sender.connect(receiver.addresses[0])
    await sender.send(peer, "kept", 1)
    await until(lambda: outbox(sender) == {} and keeper.bodies == [1])
    await sender.close()

    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=sender_id)
    await sender.send(peer, "kept", 2)  # no connect() this time
    await until(lambda: keeper.bodies == [1, 2], BOUND)
    await until(lambda: outbox(sender) == {})
    assert unreachable(tmp_path / "sender") == []


async def test_messages_for_a_peer_id_never_seen_are_said_to_wait(
        make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A peer id the node never connected to has no address to dial: its messages wait
    until it connects, and the node says so, once per peer, with the fix; ``p2phost
    doctor`` lists it (not a peer it knows an address for)."""
    lost = await lost_peer(make, tmp_path, acked=1)
    sender, known = lost.sender, lost.peer
    stranger = Identity.generate().peer_id
    with caplog.at_level(logging.WARNING, "p2phost.delivery"):
        for n in range(3):
            await sender.send(stranger, "kept", n)
            await sender.send(known, "kept", n)  # known, though down: dialled, no word
    said = [r.getMessage() for r in caplog.records if "knows no address" in r.getMessage()]
    assert len(said) == 1 and stranger in said[0], said
    assert "node.connect(ADDRESS)" in said[0] and "[node] connect" in said[0] \
        and "discovery plugin" in said[0]
    await sender.close()
    [(text, fix)] = unreachable(tmp_path / "sender")
    assert text.startswith(f"3 messages for {stranger} wait in the outbox, but this node "
                           "knows no address"), text
    assert "node.connect(ADDRESS)" in fix and "[node] connect" in fix


def test_doctor_counts_messages_only_the_journal_of_a_killed_sender_holds(
        tmp_path: Path) -> None:
    """Killed while sending, the sender's messages are in its journal, not its table:
    doctor reads them there (the node is not running, the journal is not locked)."""
    stranger = Identity.generate().peer_id
    returned = kill_a_sender(tmp_path / "sender", stranger, 0.5)
    assert returned
    [(text, _)] = unreachable(tmp_path / "sender")
    count = int(text.split()[0])
    assert count >= len(returned) and f"for {stranger} wait" in text


class Elsewhere(App):
    """Handles a topic, but not ``kept``: what the outbox holds for it is dead-lettered."""

    name = "elsewhere"

    @handler("other")
    async def other(self, message: Message) -> None:
        pass


async def test_a_connected_peer_whose_messages_all_went_to_dead_letters_is_released(
        make: Make) -> None:
    receiver = await make([Elsewhere()])
    sender = await make([Sender()], listen=[])
    peer = await sender.connect(receiver.addresses[0])
    targets = sender._dialler.targets
    await sender.send(peer, "kept", 1)  # the peer does not handle it: a dead letter
    await until(lambda: sender.delivery.stats.get("kept", "dead_lettered") == 1)
    # Sent back (`p2phost dead retry`): the peer is owed it and dialled for it, but it
    # goes to the dead letters again; owed nothing, the peer is no longer dialled.
    assert await sender.delivery.retry_dead([], "kept") == 1
    await until(lambda: sender.delivery.stats.get("kept", "dead_lettered") == 2)
    await until(lambda: outbox(sender) == {} and peer not in targets)
    assert sender.peers()  # (the connection stays)


async def test_a_sender_owing_many_peers_dials_them_within_its_peer_limit(
        make: Make, make_node: MakeNode, tmp_path: Path) -> None:
    """Restarted with messages for more peers than its peer limit, the sender neither
    dials them all at once nor connects to more than its limit: each gets its turn, as
    the connections done with make room."""
    limit, count = 3, 8
    addresses = [f"tcp://127.0.0.1:{free_port()}" for _ in range(count)]
    ids = [Identity.generate() for _ in range(count)]
    receivers = [await make([Keeper()], listen=[a], identity=i)
                 for a, i in zip(addresses, ids, strict=True)]
    sender_id = Identity.generate()
    sender = await make([Sender()], state=tmp_path / "sender", listen=[], identity=sender_id)
    peers = [await sender.connect(a) for a in addresses]
    for peer in peers:  # (where each is, saved with its first message)
        await sender.send(peer, "kept", 0)
    await until(lambda: outbox(sender) == {})
    for receiver in receivers:
        await receiver.close()
    await until(lambda: not sender.peers())
    for peer in peers:
        await sender.send(peer, "kept", 1)  # owed while they are down
    await sender.close()

    keepers = [Keeper() for _ in range(count)]
    for keeper, address, identity in zip(keepers, addresses, ids, strict=True):
        await make([keeper], listen=[address], identity=identity)
    sender = await make_node([Sender()], listen=[], identity=sender_id, peer_limit=limit,
                             state_dir=tmp_path / "sender", drain_timeout=3.0)
    most = 0
    dialling: set[str | None] = set()  # (peers being dialled, connected or not yet)
    connect = sender._dialler._connect

    async def counted(address: str, expected: str | None) -> Any:
        dialling.add(expected)
        try:
            return await connect(address, expected)
        finally:
            dialling.discard(expected)

    sender._dialler._connect = counted  # type: ignore[method-assign]

    def delivered() -> bool:
        nonlocal most  # the peers connected and those being dialled, together
        most = max(most, len(set(sender._table.peers) | dialling))
        return all(keeper.bodies == [1] for keeper in keepers)

    await until(delivered, 3 * BOUND)
    await until(lambda: outbox(sender) == {})
    assert 0 < most <= limit


async def test_an_app_disconnecting_a_peer_owed_messages_is_not_undone_at_once(
        make_node: MakeNode, tmp_path: Path) -> None:
    """``disconnect()`` holds: the outbox dials the peer again for what waits only after
    the reconnect backoff's maximum, not at once."""
    slow = Slow()
    receiver = await make_node([slow], drain_timeout=1.0)
    sender = await make_node([Sender()], listen=[], state_dir=tmp_path / "sender",
                             reconnect=Backoff(0.1, 2.0), drain_timeout=1.0)
    peer = await sender.connect(receiver.addresses[0])
    await sender.send(peer, "kept", 1)
    await until(lambda: sender.delivery.stats.get("kept", "sent") == 1)
    assert await sender.disconnect(peer)
    dials = sender._dialler.targets.counters["dials"]
    await asyncio.sleep(1.0)
    assert not sender.peers() and sender._dialler.targets.counters["dials"] == dials
    slow.release.set()
    # After the hold, dialled again for the message that waits, which is taken once.
    await until(lambda: outbox(sender) == {}, BOUND)
    assert slow.bodies == [1]


# -- making room under the peer limit: only an idle connection the outbox opened goes --

#: The reconnect backoff's maximum in these tests: how long disconnect() holds.
HOLD = 0.5


class Gate(App):
    """Handles ``kept`` (at-least-once) and ``ask``, waiting while ``gate`` is clear."""

    name = "gate"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.bodies: list[object] = []

    @handler("kept", delivery="at-least-once")
    async def kept(self, message: Message) -> None:
        await self.gate.wait()
        self.bodies.append(message.body)

    @handler("ask")
    async def ask(self, message: Message) -> object:
        await self.gate.wait()
        return message.body


class Spare(NamedTuple):
    gate: Gate
    a: Node
    b: Keeper
    sender: Node
    pa: str
    pb: str


async def spare_a(make_node: MakeNode, tmp_path: Path) -> Spare:
    """A sender with peer-limit 1 whose outbox dialled a and owes it nothing now (its
    connection is idle); b, owed nothing, disconnected and past its hold."""
    gate, keeper = Gate(), Keeper()
    a = await make_node([gate], drain_timeout=1.0)
    b = await make_node([keeper], drain_timeout=1.0)
    sender = await make_node([Sender()], listen=[], state_dir=tmp_path / "sender",
                             peer_limit=1, reconnect=Backoff(0.05, HOLD), drain_timeout=1.0)
    pa = await sender.connect(a.addresses[0])
    pb = await sender.connect(b.addresses[0])
    await sender.send(pb, "kept", 0)
    await until(lambda: outbox(sender) == {})
    assert await sender.disconnect(pb) and await sender.disconnect(pa)
    await sender.send(pa, "kept", 1)  # after the hold, the outbox's dial opens a
    await until(lambda: gate.bodies == [1] and outbox(sender) == {})
    assert not sender._table.peers[pa].current.closing  # type: ignore[union-attr]
    await asyncio.sleep(2 * HOLD)
    return Spare(gate, a, keeper, sender, pa, pb)


async def kept_open(sender: Node, pa: str, pb: str) -> None:
    """b waits for room (the limit is 1): a's connection, in use, stays."""
    channel = sender._table.peers[pa].current
    assert channel is not None
    await sender.send(pb, "kept", 2)
    await asyncio.sleep(1.0)
    assert not channel.closing and not channel.ended, "a connection in use was closed"


async def test_an_idle_connection_the_outbox_opened_makes_room_for_a_peer_owed_messages(
        make_node: MakeNode, tmp_path: Path) -> None:
    _, _, b, sender, pa, pb = await spare_a(make_node, tmp_path)
    channel = sender._table.peers[pa].current
    assert channel is not None
    await sender.send(pb, "kept", 2)
    await until(lambda: b.bodies == [0, 2], BOUND)
    assert channel.ended


async def test_a_connection_with_new_messages_in_flight_is_not_closed_to_make_room(
        make_node: MakeNode, tmp_path: Path) -> None:
    """Messages sent to the peer after it was owed nothing, while connected: its
    connection stays until they are acknowledged (closed under one, it was sent twice)."""
    gate, _, b, sender, pa, pb = await spare_a(make_node, tmp_path)
    gate.gate.clear()
    await sender.send(pa, "kept", 2)  # on that connection, not acknowledged
    await asyncio.sleep(0.2)
    await kept_open(sender, pa, pb)
    gate.gate.set()  # acknowledged: now it goes, and b gets its turn
    await until(lambda: b.bodies == [0, 2], BOUND)
    assert gate.bodies == [1, 2]


async def test_a_connection_with_a_request_in_flight_is_not_closed_to_make_room(
        make_node: MakeNode, tmp_path: Path) -> None:
    gate, _, _, sender, pa, pb = await spare_a(make_node, tmp_path)
    gate.gate.clear()
    asked = asyncio.ensure_future(sender.request(pa, "ask", "q", timeout=5.0))
    await asyncio.sleep(0.2)
    await kept_open(sender, pa, pb)
    gate.gate.set()
    assert await asked == "q"


async def test_a_connection_discovery_or_node_connect_keeps_is_not_closed_to_make_room(
        make_node: MakeNode, tmp_path: Path) -> None:
    """Discovery finding the peer after it was owed nothing, or ``[node] connect``
    listing its address (a target kept by address): its connection stays."""
    for how in ("discovery", "[node] connect"):
        _, a, _, sender, pa, pb = await spare_a(make_node, tmp_path / how)
        if how == "discovery":
            sender.peer_found(PeerRecord((a.addresses[0],), pa, source="mdns"))
        else:
            sender._dialler.keep_connected(a.addresses[0])  # what [node] connect does
        await kept_open(sender, pa, pb)


async def test_a_connection_an_app_connected_to_is_not_closed_to_make_room(
        make_node: MakeNode, tmp_path: Path) -> None:
    """``node.connect`` that reuses the outbox's connection makes it the app's."""
    _, a, _, sender, pa, pb = await spare_a(make_node, tmp_path)
    assert await sender.connect(a.addresses[0]) == pa
    await kept_open(sender, pa, pb)


async def test_a_peer_that_dialled_in_is_not_closed_to_make_room(
        make_node: MakeNode, tmp_path: Path) -> None:
    """The outbox's connection to a dropped while a was still owed; a dials in and is
    served on its own connection, which is never the outbox's to close."""
    slow = Slow()
    a = await make_node([slow], drain_timeout=1.0)
    b = await make_node([Keeper()], drain_timeout=1.0)
    sender = await make_node([Sender()], state_dir=tmp_path / "sender", peer_limit=1,
                             reconnect=Backoff(0.05, HOLD), drain_timeout=1.0)
    pa = await sender.connect(a.addresses[0])
    pb = await sender.connect(b.addresses[0])
    await sender.send(pb, "kept", 0)
    await until(lambda: outbox(sender) == {})
    assert await sender.disconnect(pb)
    await sender.send(pa, "kept", 1)  # held by a's handler: owed
    await until(lambda: sender.delivery.stats.get("kept", "sent") >= 2)
    assert await sender.disconnect(pa)
    # After the hold the outbox dials a (it is owed message 1): an outbox connection.
    await until(lambda: pa in sender._table.peers, 10.0)
    assert await sender.disconnect(pa)  # dropped while still owed
    await until(lambda: pa not in sender._table.peers)
    await a.connect(sender.addresses[0])  # a dials in (within the hold)
    await until(lambda: pa in sender._table.peers)
    assert not any(c.initiator for c in sender._table.peers[pa].channels)
    await asyncio.sleep(2 * HOLD)
    await sender.send(pb, "kept", 2)  # b waits for room: the limit is 1
    slow.release.set()  # a is served on its own connection, then owed nothing
    await until(lambda: pa not in outbox(sender))
    await asyncio.sleep(1.0)
    assert pa in sender._table.peers, "the connection a dialled in was closed"


# -- making room for a peer dialling in: an idle connection the outbox opened goes --


async def full_of_outbox(make_node: MakeNode, tmp_path: Path) -> Spare:
    """A listening sender with peer-limit 2 whose outbox dialled a and b (no app
    connect()) and owes them nothing now: both connections idle, the limit reached."""
    gate, keeper = Gate(), Keeper()
    a = await make_node([gate], drain_timeout=1.0)
    b = await make_node([keeper], drain_timeout=1.0)
    sender = await make_node([Sender()], state_dir=tmp_path / "sender", peer_limit=2,
                             reconnect=Backoff(0.05, HOLD), drain_timeout=1.0)
    pa = await sender.connect(a.addresses[0])
    pb = await sender.connect(b.addresses[0])
    assert await sender.disconnect(pa) and await sender.disconnect(pb)
    await sender.send(pa, "kept", 1)  # after the hold, the outbox's dials open a and b
    await sender.send(pb, "kept", 2)
    await until(lambda: gate.bodies == [1] and keeper.bodies == [2] and outbox(sender) == {},
                BOUND)
    assert len(sender.peers()) == 2
    await asyncio.sleep(2 * HOLD)
    return Spare(gate, a, keeper, sender, pa, pb)


async def dial_in(stranger: Node, address: str, seconds: float) -> bool:
    """Whether ``stranger`` gets in within ``seconds``, dialling again while refused."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        try:
            await stranger.connect(address)
            return True
        except PeerUnavailable:
            await asyncio.sleep(0.3)
    return False


async def test_an_idle_connection_the_outbox_opened_makes_room_for_a_peer_dialling_in(
        make_node: MakeNode, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, _, _, sender, pa, pb = await full_of_outbox(make_node, tmp_path)
    stranger = await make_node([Keeper()], listen=[])
    with caplog.at_level(logging.INFO, logger="p2phost.node"):
        assert await dial_in(stranger, sender.addresses[0], 5.0), "refused for ever"
    assert stranger.peer_id in sender._table.peers
    assert {pa, pb} - set(sender._table.peers), "no outbox connection was closed"
    assert "a peer dialling in was refused for want of room" in caplog.text


async def test_a_connection_with_a_request_in_flight_is_not_closed_for_a_peer_dialling_in(
        make_node: MakeNode, tmp_path: Path) -> None:
    """a, the least recently used, has a request in flight: b's connection goes."""
    gate, _, b, sender, pa, pb = await full_of_outbox(make_node, tmp_path)
    await sender.send(pb, "kept", 3)  # b used since a: a is the least recently used
    await until(lambda: b.bodies == [2, 3] and outbox(sender) == {})
    gate.gate.clear()
    asked = asyncio.ensure_future(sender.request(pa, "ask", "q", timeout=10.0))
    await asyncio.sleep(0.2)
    channel = sender._table.peers[pa].current
    assert channel is not None
    stranger = await make_node([Keeper()], listen=[])
    assert await dial_in(stranger, sender.addresses[0], 5.0)  # b's connection made room
    assert pb not in sender._table.peers
    assert not channel.closing and not channel.ended, "a connection in use was closed"
    gate.gate.set()
    assert await asked == "q"
