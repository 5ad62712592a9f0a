"""A connection closed on purpose, not the whole node (``disconnect``, an idle one the
outbox or the DHT closes), still answers what crossed its goodbye.

The node that said goodbye closed the connection as soon as its queue was sent: a
request its peer had sent at that moment, before the goodbye reached it, failed with
"the peer said goodbye" (dht-discovery's idle connections, once in a CI run); one being
handled lost its reply, and the node's own requests lost theirs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from p2phost_sdk import App, Message, PeerUnavailable, handler
from tests.runtime.conftest import build_node, tcp_pair


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
    server = build_node("tcp", [], codecs=("application/msgpack",))
    client = build_node("tcp", [Slow(delay)], listen=[], codecs=("application/msgpack",))
    await server.start()
    await client.start()
    try:
        await client.connect(server.addresses[0])
        asks = [asyncio.ensure_future(server.request(client.peer_id, "echo", n, timeout=30))
                for n in range(count)]
        await asyncio.sleep(0)  # their frames are written, the goodbye crosses them
        started = time.monotonic()
        assert await client.disconnect(server.peer_id, reason="idle")
        assert time.monotonic() - started < 5
        assert await asyncio.gather(*asks) == list(range(count))
        assert client.peers() == []
    finally:
        await client.close()
        await server.close()


async def test_a_disconnect_waits_for_the_replies_to_its_own_requests() -> None:
    async with tcp_pair(Slow(0.3)) as (server, client):
        asks = [asyncio.ensure_future(client.request(server.peer_id, "echo", n, timeout=30))
                for n in range(5)]
        await asyncio.sleep(0.01)
        assert await client.disconnect(server.peer_id)
        assert await asyncio.gather(*asks) == list(range(5))


async def test_a_disconnect_waits_no_longer_than_the_drain_timeout() -> None:
    async with tcp_pair(Slow(), options={"drain_timeout": 1.0}) as (server, _):
        client = build_node("tcp", listen=[], codecs=("application/msgpack",),
                            drain_timeout=1.0)
        await client.start()
        try:
            await client.connect(server.addresses[0])
            ask = asyncio.ensure_future(client.request(server.peer_id, "never", 1,
                                                       timeout=60))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            assert await client.disconnect(server.peer_id)
            # (1 s of drain, then 1 s at most for the last bytes, then the close)
            assert 0.9 < time.monotonic() - started < 5
            with pytest.raises(PeerUnavailable):
                await ask
        finally:
            await client.close()


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
