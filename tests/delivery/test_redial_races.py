"""Redial's bookkeeping against the outbox's pump, with the node's parts as stand-ins:
a message on its way into the outbox (its row not committed yet) must keep its peer
dialled, and a peer owed messages keeps its saved addresses when others push it out
of the bounded record of recent connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from p2phost._runtime.delivery import _redial
from p2phost._runtime.delivery._redial import Redial

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


class Committer:
    async def write(self, op: Callable[[Any], None]) -> None:
        pass

    def submit(self, op: Callable[[Any], None], *args: Any) -> None:
        pass


class Rows:
    def __init__(self) -> None:
        self.peers: set[str] = set()

    def has_rows(self, peer: str) -> bool:
        return peer in self.peers


class Channel:
    def __init__(self, peer: str, address: str) -> None:
        self.peer_id, self.address, self.initiator = peer, address, True
        self.hello = type("Hello", (), {"listen": ()})()


def redial() -> tuple[Redial, Link, Rows]:
    link, rows = Link(), Rows()
    return Redial(link, Committer(), rows), link, rows  # type: ignore[arg-type]


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


async def test_dials_of_owed_peers_take_turns_a_few_at_a_time() -> None:
    """However many peers are owed messages, at most DIALS are dialled at once (the
    limit leaving room), in the order they asked."""
    import asyncio

    from p2phost._runtime.node._owed import DIALS, OwedDials

    owed = OwedDials(room=lambda: 64, connected=lambda peer: False, limit=64)
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
