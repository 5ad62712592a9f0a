"""Closing a node whose peers never read, and whose handlers never end, takes the drain
timeout once, plus the hand-over grace once (1 s for the last replies, 2 s for tcp's
close): not once per peer, nor once per app, nor the goodbyes' wait and the mailboxes'
one after the other."""

from __future__ import annotations

import asyncio
import contextlib
import time

from p2phost._runtime import Kind, encode
from p2phost_sdk import App, Identity, Message, PeerUnavailable, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import build_node
from tests.runtime.rawpeer import length_prefixed, nonreading_tcp

DRAIN = 2.0
PEERS = 4
GRACE = 1.0 + 2.0  # the last replies' flush, tcp-transport's close


class Stuck(App):
    """A handler that never returns (until cancelled)."""

    name = "stuck-a"

    def __init__(self) -> None:
        self.started = 0

    @handler("stuck-a")
    async def stuck(self, message: Message) -> None:
        self.started += 1
        await asyncio.Event().wait()


class OtherStuck(Stuck):
    """Another app, as stuck."""

    name = "stuck-b"

    @handler("stuck-b")
    async def stuck(self, message: Message) -> None:
        self.started += 1
        await asyncio.Event().wait()


async def nonreader(address: str, topics: list[str]) -> tuple[Identity, asyncio.StreamWriter]:
    """A peer that says hello, sends one message to each of ``topics`` and never reads."""
    identity = Identity.generate()
    writer = await nonreading_tcp(address, identity)
    for number, topic in enumerate(topics, 1):
        writer.write(length_prefixed(encode(Kind.MESSAGE, number, topic.encode(), b"1")))
    await writer.drain()
    return identity, writer


async def test_close_with_peers_that_never_read_takes_the_drain_timeout_once() -> None:
    apps = [Stuck(), OtherStuck()]
    node = build_node("tcp", apps, listen=["tcp://127.0.0.1:0"], drain_timeout=DRAIN,
                      keepalive_timeout=60.0)
    await node.start()
    peers = [await nonreader(node.addresses[0], ["stuck-a", "stuck-b"]) for _ in range(PEERS)]
    await wait_until(lambda: sum(app.started for app in apps) == 2 * PEERS, 10,
                     "every peer's messages in a handler")

    async def fill(peer: str) -> None:  # until the connection is full and sends wait
        with contextlib.suppress(PeerUnavailable):
            while True:
                await node.send(peer, "anything", "x" * 60_000)
    filling = [asyncio.ensure_future(fill(identity.peer_id)) for identity, _ in peers]
    await asyncio.sleep(1.0)
    assert not any(task.done() for task in filling), "the sends should be waiting for room"

    started = time.monotonic()
    await asyncio.wait_for(node.close(), 60)
    took = time.monotonic() - started
    for task in filling:
        task.cancel()
    for _, writer in peers:
        writer.close()
    # Before, each of these waited in turn: goodbyes 2 + two apps 2 + 2 + four peers 3
    # each: 18 s.
    assert took < DRAIN + GRACE + 1.5, f"close took {took:.1f}s"
