"""A connection closed on purpose, not the whole node (``disconnect``, an idle one the
outbox or the DHT closes), still answers what crossed its goodbye.

The node that said goodbye closed the connection as soon as its queue was sent: a
request its peer had sent at that moment, before the goodbye reached it, failed with
"the peer said goodbye" (dht-discovery's idle connections, once in a CI run); one being
handled lost its reply, and the node's own requests lost theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from p2phost._runtime import Node
from p2phost_sdk import App, Message, PeerUnavailable, RequestTimeout, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import build_node, tcp_pair


def msgpack_node(apps: Sequence[App] = (), **options: Any) -> Node:
    """A node over tcp with msgpack, not started."""
    return build_node("tcp", apps, codecs=("application/msgpack",), **options)


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    """``nodes`` started; closed, the last first."""
    started: list[Node] = []
    try:
        for node in nodes:
            await node.start()
            started.append(node)
        yield
    finally:
        for node in reversed(started):
            await node.close()


class Slow(App):
    """``echo`` answers its body after ``delay`` seconds; ``never`` never answers."""

    name = "slow"

    def __init__(self, delay: float = 0.001) -> None:
        super().__init__()
        self.delay = delay

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        await asyncio.sleep(self.delay)
        return message.body

    @handler("never")
    async def never(self, message: Message) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize(("delay", "count"), [(0.001, 200), (0.3, 5)])
async def test_the_peers_requests_sent_as_it_disconnects_are_answered(delay: float,
                                                                     count: int) -> None:
    # (A peer's requests are handled in order: 5 of 0.3 s take 1.5 s.)
    # The client dialled and runs the app; the server cannot dial it back (it listens
    # nowhere), so every answer comes on the connection being closed.
    server, client = msgpack_node(), msgpack_node([Slow(delay)], listen=[])
    async with running(server, client):
        await client.connect(server.addresses[0])
        asks = [asyncio.ensure_future(server.request(client.peer_id, "echo", n, timeout=30))
                for n in range(count)]
        await asyncio.sleep(0)  # their frames are written, the goodbye crosses them
        started = time.monotonic()
        assert await client.disconnect(server.peer_id, reason="idle")
        assert time.monotonic() - started < 5
        assert await asyncio.gather(*asks) == list(range(count))
        assert client.peers() == []


async def test_a_disconnect_waits_for_the_replies_to_its_own_requests() -> None:
    async with tcp_pair(Slow(0.3)) as (server, client):
        asks = [asyncio.ensure_future(client.request(server.peer_id, "echo", n, timeout=30))
                for n in range(5)]
        await asyncio.sleep(0.01)
        assert await client.disconnect(server.peer_id)
        assert await asyncio.gather(*asks) == list(range(5))


@pytest.mark.parametrize("cancelled", [False, True])
async def test_a_disconnect_waits_no_longer_than_the_drain_timeout(cancelled: bool) -> None:
    # Cancelled (a timeout around it), it stops waiting; the retirement goes on.
    client = msgpack_node(listen=[], drain_timeout=1.0)
    async with tcp_pair(Slow(), options={"drain_timeout": 1.0}) as (server, _), \
            running(client):
        await client.connect(server.addresses[0])
        ask = asyncio.ensure_future(client.request(server.peer_id, "never", 1, timeout=60))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        if cancelled:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await client.disconnect(server.peer_id)
        else:
            assert await client.disconnect(server.peer_id)
            # (1 s of drain, then 1 s at most for the last bytes, then the close)
            assert 0.9 < time.monotonic() - started < 5
        await wait_until(lambda: not client.peers() and client.peer_id not in
                         {p.peer_id for p in server.peers()}, 8, "the connection closed")
        with pytest.raises(PeerUnavailable):
            await ask


async def test_a_disconnect_does_not_wait_for_what_a_new_connection_carries() -> None:
    # Requests made once the goodbye was said go on a new connection: the old one closes
    # without them, and the new one stays.
    async with tcp_pair(Slow(), options={"drain_timeout": 1.0}) as (server, client):
        slow = asyncio.ensure_future(client.request(server.peer_id, "echo", 1, timeout=30))
        disconnecting = asyncio.ensure_future(client.disconnect(server.peer_id))
        await asyncio.sleep(0)
        never = asyncio.ensure_future(client.request(server.addresses[0], "never", 2,
                                                     timeout=30))
        started = time.monotonic()
        assert await disconnecting
        assert time.monotonic() - started < 2  # not the drain timeout's 10 s, nor gone's 2
        assert await slow == 1
        assert [p.peer_id for p in client.peers()] == [server.peer_id]
        assert not never.done()
        never.cancel()


class Kicker(App):
    """``kick`` disconnects its sender (awaited as ``how`` says), then answers."""

    name = "kicker"

    def __init__(self, how: str = "await") -> None:
        super().__init__()
        self.how = how
        self.took = -1.0

    @handler("kick")
    async def kick(self, message: Message) -> Any:
        return await self.disconnect_sender(message)

    async def disconnect_sender(self, message: Message) -> str:
        started = time.monotonic()
        disconnecting = self.node.disconnect(message.sender, reason="kicked")
        if self.how == "wait_for":  # (a task of its own on 3.11)
            await asyncio.wait_for(disconnecting, 30)
        elif self.how == "task":
            await asyncio.create_task(disconnecting)
        else:
            await disconnecting
        self.took = time.monotonic() - started
        return "bye"


class OtherKicker(Kicker):
    """The same in a second app, on another topic."""

    name = "other-kicker"

    @handler("kick-too")
    async def kick(self, message: Message) -> Any:
        return await self.disconnect_sender(message)


@pytest.mark.parametrize("how", ["await", "wait_for", "task", "two apps"])
async def test_a_handler_disconnects_its_own_sender_at_once(how: str) -> None:
    # It does not wait for the peer's mailboxes, which wait for it: from its own task, a
    # task it starts, or two apps' handlers of the same peer at once.
    apps = [Kicker(how), OtherKicker(how)]
    server, client = msgpack_node(apps), msgpack_node(listen=[])
    async with running(server, client):
        await client.connect(server.addresses[0])
        await client.send(server.peer_id, "kick", 1)
        if how == "two apps":
            await client.send(server.peer_id, "kick-too", 1)
        else:
            apps.pop()
        await wait_until(lambda: all(app.took >= 0 for app in apps), 10,
                         "the handlers' disconnects returned")
        assert max(app.took for app in apps) < 2  # (the drain timeout is 10 s)
        await wait_until(lambda: not client.peers(), 5, "the client sees the goodbye")


@pytest.mark.parametrize("closing", ["both", "the peer"])
async def test_a_retirement_ends_with_its_connection(closing: str) -> None:
    # The peer closed the connection (it disconnected too, or shut down) while this
    # node waited for a handler of its: nothing more can be answered there. (The
    # server's drain timeout is 1 s as it closes, with the handler still running.)
    async with tcp_pair(Slow(), options={"drain_timeout": 1.0}) as (server, client):
        ask = asyncio.ensure_future(client.request(server.peer_id, "never", 1, timeout=0.3))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        if closing == "both":
            await asyncio.gather(server.disconnect(client.peer_id),
                                 client.disconnect(server.peer_id))
        else:
            disconnecting = asyncio.ensure_future(server.disconnect(client.peer_id))
            await asyncio.sleep(0.4)
            await client.close()
            await disconnecting
        assert time.monotonic() - started < 0.9  # (not the drain timeout, 1 s here)
        with pytest.raises((PeerUnavailable, RequestTimeout)):
            await ask


async def test_answers_move_to_a_new_connection_of_the_same_peer() -> None:
    # The peer dialled again while its requests were still being handled: their answers
    # go on the new connection, and the old one closes without waiting for them.
    server, client = msgpack_node(), msgpack_node([Slow(0.4)])
    async with running(server, client):
        await server.connect(client.addresses[0])
        asks = [asyncio.ensure_future(server.request(client.peer_id, "echo", n, timeout=30))
                for n in range(5)]  # 2 s of handling, one after another
        await asyncio.sleep(0.1)
        started = time.monotonic()
        disconnecting = asyncio.ensure_future(client.disconnect(server.peer_id))
        await wait_until(lambda: _goodbye_heard(server, client.peer_id), 5,
                         "the server heard the goodbye")
        await server.connect(client.addresses[0])
        await disconnecting
        assert time.monotonic() - started < 1.5
        assert await asyncio.gather(*asks) == list(range(5))


def _goodbye_heard(node: Node, peer_id: str) -> bool:
    peer = node._table.get(peer_id)
    return peer is not None and not any(c.usable for c in peer.channels)
