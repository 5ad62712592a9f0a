"""A receiver whose handler is slow but steady: its mailbox fills, its reader waits for
room and reads nothing, everything the sender wrote sits in the receiver's kernel. The
sender must not take it for dead (it did: "sent nothing, and took nothing sent to it",
the connection closed and the one-way messages queued behind were lost)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import App, Identity, Message, handler

from .conftest import MsgpackCodec, TcpTransport

COUNT, DELAY, TIMEOUT = 24, 0.2, 2.0  # the handlers take 4.8 s: over two timeouts


class Slow(App):
    name = "slow"
    mailbox_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.all_handled = asyncio.Event()

    @handler("slow")
    async def slow(self, message: Message) -> None:
        await asyncio.sleep(DELAY)
        self.handled += 1
        if self.handled == COUNT:
            self.all_handled.set()


def node(apps: list[App], listen: list[str]) -> Node:
    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/msgpack": MsgpackCodec()}, apps=apps,
                options=NodeOptions(listen=listen, keepalive_timeout=TIMEOUT,
                                    keepalive_interval=0.6))


async def test_a_slow_but_steady_receiver_keeps_its_connection_and_every_message(
        caplog: pytest.LogCaptureFixture) -> None:
    app = Slow()
    receiver, sender = node([app], ["tcp://127.0.0.1:0"]), node([], [])
    await receiver.start()
    await sender.start()
    try:
        peer = await sender.connect(receiver.addresses[0])
        with caplog.at_level(logging.WARNING, logger="p2phost"):
            for _ in range(COUNT):
                await asyncio.wait_for(sender.send(peer, "slow", b"x" * 1000), 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(app.all_handled.wait(), COUNT * DELAY + 10)
        assert app.handled == COUNT
        assert [p.peer_id for p in sender.peers()] == [receiver.peer_id]
        assert not [r for r in caplog.records if "keepalive timeout" in r.getMessage()]
    finally:
        await sender.close()
        await receiver.close()
