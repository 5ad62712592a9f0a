"""A node at its peer limit shares its places among sources: a peer from a less crowded
source gets in, and the most crowded source gives up its idlest peer that dialled in and
is owed nothing (docs/operations.md, "Connection limits and refusals"). Real nodes over
TCP; each dialler binds its own loopback address (127.0.0.x), so sources differ."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from recorder_app import Recorder

from p2phost._runtime import Node
from p2phost_sdk import App, Connection, Identity, PeerUnavailable
from p2phost_sdk.testing.discovery import wait_until
from tests.delivery.test_node import Sender, Slow
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import MakeNode
from tests.runtime.test_disconnect_answers import Slow as SlowEcho

use_plugin_source("tcp-transport")

from p2phost_tcp_transport import TcpTransport  # noqa: E402
from p2phost_tcp_transport._transport import parse_address  # noqa: E402

#: The server's peer limit.
LIMIT = 4
Make = Callable[..., Awaitable[Node]]


class FromHost(TcpTransport):
    """TCP that dials from ``host`` (a loopback address of its own: a source)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    async def dial(self, address: str, *, timeout: float) -> Connection:
        host, port = parse_address(address)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port,
                                                           local_addr=(self.host, 0))
        return self._connection(reader, writer)


@pytest.fixture
def kind() -> str:
    """(make_node's transport: tcp.)"""
    return "tcp"


@pytest.fixture
def make(make_node: MakeNode) -> Make:
    """``await make(source, apps, **options)``: a started node over tcp dialling from
    ``source``, listening nowhere unless told."""

    async def start(source: str, apps: Sequence[App] = (), **options: Any) -> Node:
        return await make_node(apps, tcp=FromHost(source), **{"listen": [], **options})

    return start


async def _server(make: Make, *apps: App) -> Node:
    return await make("127.0.0.1", [Recorder(), *apps], listen=["tcp://127.0.0.1:0"],
                      peer_limit=LIMIT)


async def _fill(make: Make, server: Node, count: int, source: str = "127.0.0.2") -> list[Node]:
    """``count`` peers from ``source`` connected to ``server``, in order."""
    peers = []
    for _ in range(count):
        node = await make(source)
        await node.connect(server.addresses[0])
        peers.append(node)
    return peers


def _connected(node: Node, server: Node) -> bool:
    return any(p.peer_id == server.peer_id for p in node.peers())


async def test_a_peer_from_another_source_gets_in_and_the_crowded_source_gives_its_idlest(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p2phost")
    server = await _server(make)
    crowd = await _fill(make, server, LIMIT)
    for node in (crowd[0], *crowd[2:]):  # all but the second spoke since they connected
        assert await node.request(server.peer_id, "record", 1) >= 1
    newcomer = await make("127.0.0.3")
    async with asyncio.timeout(10):
        await newcomer.connect(server.addresses[0])
        assert await newcomer.request(server.peer_id, "record", 2) >= 1
    await wait_until(lambda: not _connected(crowd[1], server), 10,
                     "the crowded source's idlest peer is retired")
    assert [_connected(n, server) for n in crowd] == [True, False, True, True]
    assert len(server.peers()) == LIMIT
    assert server.stats()["connections"]["refused"] >= 1
    assert any("to make room under the peer limit for a peer from 127.0.0.3" in r.getMessage()
               for r in caplog.records)


async def test_a_peer_retired_for_room_still_gets_the_answer_being_made(make: Make) -> None:
    # Its request was being handled as the newcomer came: the goodbye waits for it.
    server = await _server(make, SlowEcho(1.0))
    crowd = await _fill(make, server, LIMIT)
    ask = asyncio.ensure_future(crowd[1].request(server.peer_id, "echo", 7, timeout=30))
    await asyncio.sleep(0.1)
    for node in (crowd[0], *crowd[2:]):
        assert await node.request(server.peer_id, "record", 1) >= 1
    newcomer = await make("127.0.0.3")
    await newcomer.connect(server.addresses[0])
    assert await ask == 7
    await wait_until(lambda: not _connected(crowd[1], server), 10,
                     "the crowded source's idlest peer is retired")


async def test_a_peer_from_the_most_crowded_source_is_refused_as_before(make: Make) -> None:
    server = await _server(make)
    crowd = await _fill(make, server, LIMIT)
    more = await make("127.0.0.2")
    with pytest.raises(PeerUnavailable, match=rf"peer limit reached \({LIMIT}\)"):
        await more.connect(server.addresses[0])
    await asyncio.sleep(0.2)  # (a retirement would be under way)
    assert all(_connected(n, server) for n in crowd)


async def test_a_peer_this_node_dialled_or_owes_messages_is_never_retired(
        make: Make) -> None:
    slow = Slow()
    server = await _server(make, Sender())
    # The idlest: a peer at 127.0.0.2 the server dialled, then one that dialled in and
    # is owed a message (its handler holds it: unacknowledged) ...
    dialled = await make("127.0.0.2", listen=["tcp://127.0.0.2:0"])
    await server.connect(dialled.addresses[0])
    owed = await make("127.0.0.2", [slow])
    await owed.connect(server.addresses[0])
    await server.send(owed.peer_id, "kept", 1)
    await wait_until(lambda: server._reliable.owes(owed.peer_id), 5, "the message is owed")
    # ... then two more that dialled in from 127.0.0.2: the server is full.
    rest = await _fill(make, server, 2)
    assert len(server.peers()) == LIMIT
    newcomer = await make("127.0.0.3")
    async with asyncio.timeout(10):
        await newcomer.connect(server.addresses[0])
    await wait_until(lambda: not _connected(rest[0], server), 10,
                     "the idlest peer that may go is retired")
    assert _connected(server, dialled) and _connected(owed, server) and _connected(rest[1], server)
    slow.release.set()
    await wait_until(lambda: slow.bodies == [1], 10, "the owed message is delivered")


async def test_a_client_never_costs_a_peer_its_place(make: Make) -> None:
    # `p2phost ping` or `send` from elsewhere is gone in a moment: a monitor pinging a
    # full node every few seconds would otherwise knock a peer off each time.
    server = await _server(make)
    crowd = await _fill(make, server, LIMIT)
    client = await make("127.0.0.3", client=True)
    with pytest.raises(PeerUnavailable, match="peer limit reached"):
        async with asyncio.timeout(10):
            await client.connect(server.addresses[0])
    await asyncio.sleep(0.5)  # (a retirement would have begun)
    assert all(_connected(n, server) for n in crowd)


async def test_a_retired_peer_back_before_its_old_connection_ended_counts_again(
        make: Make) -> None:
    # The retired peer's id connects again while its old connection is still being
    # retired (a node restarted at once, or one that redials on purpose: the old
    # connection's goodbye waits up to 1 s for a peer that reads nothing). Its new
    # connection holds a place: were it left out of the count, the server would take a
    # peer over its limit (and one more each time this is done again).
    server = await _server(make)
    identity = Identity.generate()
    victim = await make("127.0.0.2", identity=identity)
    await victim.connect(server.addresses[0])
    crowd = await _fill(make, server, LIMIT - 1)
    for node in crowd:
        assert await node.request(server.peer_id, "record", 1) >= 1
    connections = server._connections
    retiring = asyncio.Event()
    release = asyncio.Event()
    retire = connections._retire

    async def slow_retire(channel: Any, reason: str, mutual: bool) -> None:
        retiring.set()
        await release.wait()  # (the retired peer reads nothing meanwhile)
        await retire(channel, reason, mutual)

    connections._retire = slow_retire  # type: ignore[method-assign]
    newcomer = await make("127.0.0.3")
    async with asyncio.timeout(10):
        await newcomer.connect(server.addresses[0])
        await retiring.wait()
    connections._retire = retire  # type: ignore[method-assign]
    await crowd[0].close()  # a place is free
    await wait_until(lambda: len(server.peers()) == LIMIT, 10, "a peer left")
    twin = await make("127.0.0.2", identity=identity)
    async with asyncio.timeout(10):
        await twin.connect(server.addresses[0])
    release.set()
    await wait_until(lambda: not _connected(victim, server), 10, "the old connection ended")
    assert _connected(twin, server)
    assert connections._admitted() == len(server.peers()) == LIMIT
    more = await make("127.0.0.4")  # (it gets in for a peer of 127.0.0.2)
    async with asyncio.timeout(10):
        await more.connect(server.addresses[0])
    await asyncio.sleep(0.5)  # (a retirement would be under way)
    assert len(server.peers()) == LIMIT


async def test_one_host_coming_and_going_does_not_churn_another_sources_peers(
        make: Make) -> None:
    # A host with throwaway identities connects, gets its answer and goes, again and
    # again: each visit had one peer of the crowded source retired for it (which then
    # redialled into the place it left). A source makes room once a minute at most.
    server = await _server(make)
    for _ in range(LIMIT):  # peers kept connected ([node] connect): they redial
        await make("127.0.0.2", connect=[server.addresses[0]])
    await wait_until(lambda: len(server.peers()) == LIMIT, 10, "the server is full")
    retired = 0
    for visit in range(3):
        visitor = await make("127.0.0.3")
        try:
            async with asyncio.timeout(10):
                await visitor.connect(server.addresses[0])
            retired += 1
        except PeerUnavailable as exc:
            assert visit > 0 and "peer limit reached" in str(exc)
        await visitor.close()
        await wait_until(lambda: len(server.peers()) == LIMIT, 10, "full again")
    assert retired == 1


async def test_a_dial_under_way_holds_its_place_against_peers_dialling_in(
        make: Make) -> None:
    # The dialler takes room for its dials; peers accepted while one was under way took
    # a node with peer-limit 2 to 3 peers once it finished (seen among beacon nodes).
    stalled = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.set()  # the dial is in its handshake: no hello comes back
        await reader.read()  # until the dialler gives up
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server = await make("127.0.0.1", [Recorder()], listen=["tcp://127.0.0.1:0"],
                        peer_limit=2, handshake_timeout=3.0)
    try:
        dial = asyncio.ensure_future(server.connect(f"tcp://127.0.0.1:{port}"))
        await asyncio.wait_for(stalled.wait(), 5)
        first = await make("127.0.0.2")
        await first.connect(server.addresses[0])
        second = await make("127.0.0.3")
        with pytest.raises(PeerUnavailable, match="peer limit reached"):
            await second.connect(server.addresses[0])
        with pytest.raises(PeerUnavailable):
            await dial
    finally:
        listener.close()
