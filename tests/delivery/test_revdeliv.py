"""Review of delivfix (outbox redials within peer-limit): failing tests for the bugs found.

Each test shows a connection the outbox's room-making retires although something still
uses it. In-process nodes over real TCP, as tests/delivery/test_redial.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple

from p2phost._runtime import Node
from p2phost_sdk import App, Backoff, Message, PeerRecord, handler
from tests.delivery.test_node import Keeper, Sender, Slow, until
from tests.delivery.test_node import kind as kind  # (the fixtures, over tcp)
from tests.delivery.test_redial import outbox
from tests.runtime.conftest import MakeNode

#: The reconnect backoff's maximum in these tests: how long disconnect() holds.
HOLD = 0.5


class Gate(App):
    """Handles ``kept`` (at-least-once), waiting while ``gate`` is clear."""

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
    sender: Node
    pa: str
    pb: str


async def spare_a(make_node: MakeNode, tmp_path: Path) -> Spare:
    """A sender with peer-limit 1 whose outbox dialled a and owes it nothing now (a's
    connection is 'spare'); b, owed nothing, disconnected and past its hold."""
    gate = Gate()
    a = await make_node([gate], drain_timeout=1.0)
    b = await make_node([Keeper()], drain_timeout=1.0)
    sender = await make_node([Sender()], listen=[], state_dir=tmp_path / "sender",
                             peer_limit=1, reconnect=Backoff(0.05, HOLD), drain_timeout=1.0)
    pa = await sender.connect(a.addresses[0])
    pb = await sender.connect(b.addresses[0])
    await sender.send(pb, "kept", 0)
    await until(lambda: outbox(sender) == {})
    assert await sender.disconnect(pb) and await sender.disconnect(pa)
    await sender.send(pa, "kept", 1)  # after the hold, the outbox's dial opens a
    await until(lambda: gate.bodies == [1] and outbox(sender) == {})
    await asyncio.sleep(2 * HOLD)
    return Spare(gate, a, sender, pa, pb)


async def test_a_spare_connection_with_new_messages_in_flight_is_not_retired(
        make_node: MakeNode, tmp_path: Path) -> None:
    """A peer the outbox dialled and then owed nothing is 'spare'; new acknowledged
    messages sent to it while it is connected do not make it owed again (put() calls no
    keep_peer for a connected peer, so OwedDials.owed() never runs): a peer waiting for
    room then has its connection closed under a message in flight."""
    gate, _, sender, pa, pb = await spare_a(make_node, tmp_path)
    channel = sender._table.peers[pa].current
    assert channel is not None
    gate.gate.clear()
    await sender.send(pa, "kept", 2)  # in flight on that connection, not acknowledged
    await asyncio.sleep(0.2)
    await sender.send(pb, "kept", 3)  # b waits for room: the limit is 1
    await asyncio.sleep(1.0)
    # a is owed message 2: its connection must not go to make room (it goes, b takes
    # the room, is closed in turn for a, and a is dialled again: message 2 sent twice).
    assert not channel.ended and not channel.closing, \
        "the connection to a was retired with a message in flight"
    gate.gate.set()


async def test_a_peer_that_dialled_in_is_not_retired_to_make_room(
        make_node: MakeNode, tmp_path: Path) -> None:
    """OwedDials._opened keeps a peer whose outbox-opened connection dropped while it was
    still owed; when that peer later dials in and is served, its inbound connection is
    taken for the outbox's spare one and closed to make room."""
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
    assert pa in sender._table.peers, "the connection a dialled in was retired"


async def test_a_spare_connection_with_a_request_in_flight_is_not_retired(
        make_node: MakeNode, tmp_path: Path) -> None:
    """An app's request to a peer the outbox dialled (and owes nothing now) fails when a
    peer owed messages waits for room: the connection it waits on is closed."""
    gate, _, sender, pa, pb = await spare_a(make_node, tmp_path)
    gate.gate.clear()
    asked = asyncio.ensure_future(sender.request(pa, "ask", "q", timeout=5.0))
    await asyncio.sleep(0.2)
    await sender.send(pb, "kept", 2)  # b waits for room: the limit is 1
    await asyncio.sleep(1.0)
    gate.gate.set()
    assert await asked == "q"  # PeerUnavailable: the connection went under the request


async def test_a_spare_connection_discovery_lists_is_not_retired(
        make_node: MakeNode, tmp_path: Path) -> None:
    """release_peer() looks at discovery only when the peer settles: discovery finding
    the peer afterwards leaves it spare, and it is closed (and discovery's loop dials it
    again at once, over the limit)."""
    _, a, sender, pa, pb = await spare_a(make_node, tmp_path)
    sender.peer_found(PeerRecord((a.addresses[0],), pa, source="mdns"))
    channel = sender._table.peers[pa].current
    assert channel is not None
    await sender.send(pb, "kept", 2)  # b waits for room: the limit is 1
    await asyncio.sleep(1.0)
    assert not channel.ended and not channel.closing, \
        "the connection to a peer discovery lists was retired"


async def test_a_project_last_run_before_journal_marks_were_written_at_start_starts(
        make_node: MakeNode, tmp_path: Path) -> None:
    """Builds from f7c66ec up to fafa53e wrote a journal_mark row only when a journal
    folded, but set up (wrote the header of) the outbox journal at every start: a node
    that never sent an acknowledged message left a begun journal and no row. Upgraded,
    its start is refused as 'delivery.db emptied or replaced', and the fix given (move
    delivery.db aside) throws away its dead letters, dedupe window and apps' store."""
    import sqlite3

    from p2phost._runtime.delivery._store import DATABASE_NAME

    state = tmp_path / "node"
    node = await make_node([Keeper()], listen=[], state_dir=state, drain_timeout=1.0)
    await node.close()
    db = sqlite3.connect(state / DATABASE_NAME)
    with db:
        db.execute("DELETE FROM journal_mark")  # as such a build left it
    db.close()
    node = await make_node([Keeper()], listen=[], state_dir=state, drain_timeout=1.0)
    await node.close()
