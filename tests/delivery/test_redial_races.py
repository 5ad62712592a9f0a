"""Redial's bookkeeping against the outbox's pump, with the node's parts as stand-ins:
a message on its way into the outbox (its row not committed yet) must keep its peer
dialled, and a peer owed messages keeps its saved addresses when others push it out
of the bounded record of recent connections (the least recently seen go first, peers
that only dialled in before those this node dialled)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from p2phost._runtime.delivery import _redial
from p2phost._runtime.delivery._redial import Redial
from p2phost._runtime.delivery._store import open_database

PEER = "p" * 52


class Link:
    def __init__(self) -> None:
        self.kept: dict[str, tuple[str, ...]] = {}
        self.released: list[str] = []

    def keep_peer(self, peer_id: str, addresses: Sequence[str]) -> None:
        self.kept[peer_id] = tuple(addresses)

    def release_peer(self, peer_id: str) -> None:
        self.kept.pop(peer_id, None)
        self.released.append(peer_id)

    def usable(self, peer_id: str) -> Any:
        return None  # the peer dropped

    @property
    def targets(self) -> set[str]:
        return set()  # no discovery


class Committer:
    """Runs each write at once on ``db`` (when given), as a commit would."""

    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self.db = db

    async def write(self, op: Callable[[Any], None]) -> None:
        if self.db is not None:
            op(self.db)

    def submit(self, op: Callable[[Any], None], then: Callable[[], None] | None = None,
               *args: Any) -> None:
        if self.db is not None:
            op(self.db)
            if then is not None:
                then()


class Rows:
    def __init__(self) -> None:
        self.peers: set[str] = set()

    def has_rows(self, peer: str) -> bool:
        return peer in self.peers

    def destinations(self) -> list[str]:
        return sorted(self.peers)


class Channel:
    def __init__(self, peer: str, address: str) -> None:
        self.peer_id, self.address, self.initiator = peer, address, True
        self.hello = type("Hello", (), {"listen": ()})()


class Inbound(Channel):
    """A peer that dialled in, listening (its hello says) at ``listen``."""

    def __init__(self, peer: str, listen: str) -> None:
        super().__init__(peer, "tcp://203.0.113.9:40000")
        self.initiator = False
        self.hello = type("Hello", (), {"listen": (listen,)})()


def redial(db: sqlite3.Connection | None = None) -> tuple[Redial, Link, Rows]:
    link, rows = Link(), Rows()
    return Redial(link, Committer(db), rows), link, rows  # type: ignore[arg-type]


async def test_a_peer_dropping_while_its_message_goes_in_stays_dialled() -> None:
    r, link, rows = redial()
    r.connected(Channel(PEER, "tcp://127.0.0.1:1"))  # type: ignore[arg-type]

    async def put() -> None:  # the row commits after the pump looked and found none
        r.settled(PEER, gone=True)
        rows.peers.add(PEER)

    await r.put(PEER, put)
    assert link.kept == {PEER: ("tcp://127.0.0.1:1",)} and link.released == []
    assert PEER in r._saved  # its row stays too: a restart dials it from there


async def test_a_peer_owed_messages_keeps_its_addresses_past_the_bound(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(_redial, "_KNOWN", 4)
    r, link, rows = redial()
    r.connected(Channel(PEER, "tcp://127.0.0.1:1"))  # type: ignore[arg-type]

    async def put() -> None:
        rows.peers.add(PEER)

    await r.put(PEER, put)  # saved with its message; dialled: it is not connected
    link.kept.clear()
    r.kept.clear()
    for n in range(8):  # others connect: PEER leaves the bounded record
        r.connected(Channel(f"{n}" * 52, f"tcp://127.0.0.1:{n + 2}"))  # type: ignore[arg-type]
    r.disconnected(PEER)
    assert link.kept == {PEER: ("tcp://127.0.0.1:1",)}


async def test_the_peers_remembered_are_bounded_the_least_recently_seen_forgotten(
        monkeypatch: Any) -> None:
    """Past the bound, the peers seen least recently are forgotten (their rows too),
    never one owed messages; a restart remembers the rest, dialling the one owed."""
    monkeypatch.setattr(_redial, "_KNOWN", 4)
    db = open_database(None)
    r, link, rows = redial(db)
    peers = [f"{n}" * 52 for n in range(6)]

    def connect(n: int) -> None:
        r.connected(Channel(peers[n], f"tcp://127.0.0.1:{n + 1}"))  # type: ignore[arg-type]

    for n in range(4):
        connect(n)
    rows.peers.add(peers[0])  # owed messages: never forgotten, least recent or not
    connect(1)  # seen again: now the most recent
    connect(4)  # 5 > 4: the least recently seen not owed (2) goes
    connect(5)  # and then 3
    remembered = [peers[n] for n in (0, 1, 4, 5)]
    assert list(r._known) == remembered
    saved = db.execute("SELECT peer FROM peer_address ORDER BY seen").fetchall()
    assert [p for (p,) in saved] == remembered

    again, link, _ = redial(db)
    again.start(db, [peers[0]])
    assert list(again._known) == remembered
    assert link.kept == {peers[0]: ("tcp://127.0.0.1:1",)}


async def test_strangers_dialling_in_do_not_erase_a_peer_this_node_dialled(
        monkeypatch: Any) -> None:
    """Throwaway identities dialling in (review rev2 item 4) forget each other, never a
    peer this node dialled and owes nothing now, in this run or after a restart (a send
    to it then still dials it); the record stays bounded."""
    monkeypatch.setattr(_redial, "_KNOWN", 4)  # 4096 in the product
    db = open_database(None)
    r, _, _ = redial(db)
    r.connected(Channel(PEER, "tcp://192.0.2.1:4001"))  # type: ignore[arg-type]
    r.connected(Inbound(PEER, "tcp://192.0.2.1:4002"))  # type: ignore[arg-type]
    for n in range(8):  # 4,096 fresh identities, each one handshake, in the product
        r.connected(Inbound(f"{n}" * 52, "tcp://203.0.113.9:1"))  # type: ignore[arg-type]
    assert PEER in r._known, "a peer this node dialled was forgotten for strangers"
    assert len(r._known) == 4

    again, link, _ = redial(db)
    again.start(db, [])
    for n in range(8):
        again.connected(Inbound(f"x{n}" * 26, "tcp://203.0.113.9:1"))  # type: ignore[arg-type]
    assert PEER in again._known, "after a restart, strangers erased a peer it dialled"
    assert db.execute("SELECT COUNT(*) FROM peer_address").fetchone() == (4,)
    await again.put(PEER, _nothing)
    assert link.kept == {PEER: ("tcp://192.0.2.1:4002",)}


async def _nothing() -> None:
    pass


async def test_dials_of_owed_peers_take_turns_a_few_at_a_time() -> None:
    """However many peers are owed messages, at most DIALS are dialled at once (the
    limit leaving room), in the order they asked."""
    import asyncio

    from p2phost._runtime.node._owed import DIALS, OwedDials

    owed = OwedDials(room=lambda: 64, channels=lambda peer: [], limit=64)
    order: list[int] = []
    most = 0

    async def dial(n: int) -> None:
        nonlocal most
        async with owed.slot():
            most = max(most, owed.dialling)
            order.append(n)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(dial(n) for n in range(5 * DIALS)))
    assert most == DIALS and order == list(range(5 * DIALS)) and owed.dialling == 0


async def test_owed_slots_neither_leak_nor_go_negative_under_cancel_and_errors() -> None:
    """Cancelled while waiting, cancelled just after being handed a slot, a dial that
    raises: dialling returns to 0 and the next waiter always gets its turn."""
    import asyncio

    from p2phost._runtime.node._owed import OwedDials

    owed = OwedDials(room=lambda: 1, channels=lambda peer: [], limit=1)
    gate = asyncio.Event()

    async def dial(fail: bool = False) -> None:
        async with owed.slot():
            await gate.wait()
            if fail:
                raise OSError("refused")

    first = asyncio.ensure_future(dial(fail=True))
    waiting = [asyncio.ensure_future(dial()) for _ in range(3)]
    await asyncio.sleep(0)
    assert owed.dialling == 1
    waiting[0].cancel()  # cancelled while waiting for a slot
    gate.set()
    await asyncio.sleep(0)
    # first raised and released: waiting[1] was handed the slot; cancel it before it runs
    waiting[1].cancel()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert isinstance(results[0], OSError) and results[3] is None
    assert owed.dialling == 0 and not owed._waiters


async def test_a_connection_being_closed_whose_peer_came_back_no_longer_counts() -> None:
    """Closing an idle connection makes room once it leaves; were its peer back on
    another connection meanwhile, that room never comes: the next idle one goes."""
    import asyncio

    from p2phost._runtime.node._owed import OwedDials

    class Open:  # a channel, as far as OwedDials looks
        def __init__(self, peer_id: str, last_seen: float) -> None:
            self.peer_id, self.last_seen, self.usable = peer_id, last_seen, True

    table: dict[str, list[object]] = {}
    owed = OwedDials(room=lambda: 2 - len(table), channels=lambda p: table.get(p, []),
                     limit=2)
    retired: list[str] = []
    owed.idle = lambda peer: True
    owed.retire = lambda channel, why: retired.append(channel.peer_id)  # type: ignore[misc]
    for n, peer in enumerate(("a", "b")):
        channel = Open(peer, n)
        table[peer] = [channel]
        owed.opened(channel)  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(owed.slot().__aenter__())
    await asyncio.sleep(0)
    assert retired == ["a"]  # the least recently used
    table["a"] = [Open("a", 2)]  # a came back
    owed.wake()
    assert retired == ["a", "b"]
    owed.stop()
    waiter.cancel()


async def test_dials_of_peers_that_failed_wait_behind_the_others() -> None:
    """A slot is held through a dial and its handshake: peers that do not answer, asked
    for first, would keep a peer that does waiting for minutes. Their dials go after."""
    import asyncio

    from p2phost._runtime.node._owed import OwedDials

    owed = OwedDials(room=lambda: 1, channels=lambda peer: [], limit=1)
    gate = asyncio.Event()
    order: list[str] = []

    async def dial(name: str, failed: bool) -> None:
        async with owed.slot(failed=failed):
            order.append(name)
            await gate.wait()

    first = asyncio.ensure_future(dial("first", False))
    await asyncio.sleep(0)
    dials = [asyncio.ensure_future(dial(name, name.startswith("failed")))
             for name in ("failed 1", "failed 2", "answers")]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *dials)
    assert order == ["first", "answers", "failed 1", "failed 2"]
    assert owed.dialling == 0


def test_a_database_from_before_seen_gets_the_columns(tmp_path: Any) -> None:
    """A delivery.db whose peer_address has no ``seen`` nor ``dialled`` (an earlier
    p2phost's) opens with them added; its rows stay, seen at 0 (the first forgotten)."""
    path = tmp_path / "delivery.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE peer_address (peer TEXT PRIMARY KEY, addresses TEXT NOT NULL)"
                " WITHOUT ROWID")
    old.execute("INSERT INTO peer_address VALUES (?, ?)", (PEER, '["tcp://127.0.0.1:1"]'))
    old.commit()
    old.close()
    db = open_database(path)
    assert db.execute("SELECT peer, seen, dialled FROM peer_address").fetchall() == [
        (PEER, 0, 0)]
    db.close()
    open_database(path).close()  # (again: the column is there)


async def test_refusals_look_for_an_idle_connection_at_most_once_a_second() -> None:
    """Anyone may open connections to a full node to be refused: each refusal must not
    make the node ask the outbox (a database read) about every connection it opened."""
    from p2phost._runtime.node._owed import OwedDials

    class Open:  # a channel, as far as OwedDials looks
        def __init__(self, peer_id: str) -> None:
            self.peer_id, self.last_seen, self.usable = peer_id, 0.0, True

    table: dict[str, list[object]] = {p: [Open(p)] for p in "abc"}
    owed = OwedDials(room=lambda: 0, channels=lambda p: table.get(p, []), limit=3)
    looks: list[str] = []
    owed.idle = lambda peer: looks.append(peer) or False  # type: ignore[func-returns-value]
    owed.retire = lambda channel, why: None  # type: ignore[misc,assignment]
    for channels in table.values():
        owed.opened(channels[0])  # type: ignore[arg-type]
    for _ in range(1000):
        owed.refused()
    assert sorted(looks) == ["a", "b", "c"]  # one look, at each connection once
    owed.stop()
