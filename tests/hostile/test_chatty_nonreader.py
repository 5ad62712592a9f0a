"""A peer that never reads but keeps talking (a one-way message every half second, so the
keepalive always hears it): the node must not wait on it forever. Sends to it must end
(sent, or PeerUnavailable once the node gives up on the connection), within a bound."""

from __future__ import annotations

import asyncio
import time

from p2phost._runtime import Kind, encode
from p2phost_sdk import Identity, PeerUnavailable
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import build_node
from tests.runtime.rawpeer import length_prefixed, nonreading_tcp


async def test_a_chatty_peer_that_never_reads_does_not_hold_sends_forever() -> None:
    node = build_node("tcp", listen=["tcp://127.0.0.1:0"], keepalive_timeout=2.0,
                      keepalive_interval=0.5)
    await node.start()
    identity = Identity.generate()
    writer = await nonreading_tcp(node.addresses[0], identity)

    async def chatter() -> None:
        for i in range(200):  # never reads a byte; talks every half second
            writer.write(length_prefixed(encode(Kind.MESSAGE, i + 1, b"nobody", b"1")))
            await writer.drain()
            await asyncio.sleep(0.5)
    talking = asyncio.ensure_future(chatter())
    await wait_until(lambda: any(p.peer_id == identity.peer_id for p in node.peers()), 5,
                     "the raw peer is connected")
    started = time.monotonic()
    outcome = "sent everything"
    try:
        async with asyncio.timeout(30):
            for _ in range(2000):
                await node.send(identity.peer_id, "anything", "x" * 60_000)
    except PeerUnavailable:
        outcome = "gave up on the peer"
    except TimeoutError:
        outcome = "still waiting after 30 s"
    finally:
        talking.cancel()
        writer.close()
        await node.close()
    assert outcome == "gave up on the peer", outcome
    assert time.monotonic() - started < 20
