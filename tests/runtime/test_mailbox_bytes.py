"""An app's mailbox is bounded in bytes too (``App.mailbox_bytes``): large messages to a
handler that is stuck fill it, the receiver stops reading and the sender's sends wait,
where the bound in messages alone let one peer make the node hold ``mailbox_size`` times
the largest frame (attack_slow, finding 5: 300 x 1 MiB held 306 MB). A single message
over the bound is still taken by an empty mailbox."""

from __future__ import annotations

import asyncio

from p2phost._runtime import Node, NodeOptions
from p2phost._runtime.messaging._mailbox import Mailbox
from p2phost_sdk import App, Identity, Message, handler

from .conftest import MsgpackCodec, TcpTransport

MIB = 1024 * 1024


class Stuck(App):
    """Takes large messages; each handler waits until the test lets it go."""

    name = "stuck"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.mailbox_bytes = limit  # type: ignore[misc]
        self.gate = asyncio.Event()
        self.seen: list[int] = []

    @handler("big")
    async def big(self, message: Message) -> None:
        await self.gate.wait()
        self.seen.append(message.body[0])


def node(apps: list[App], listen: list[str]) -> Node:
    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/msgpack": MsgpackCodec()}, apps=apps,
                options=NodeOptions(listen=listen))


def mailbox_of(receiver: Node) -> Mailbox[object]:  # type: ignore[type-var]
    mailbox: Mailbox[object] = receiver._dispatch.routes["big"].mailbox  # type: ignore[type-var]
    return mailbox


async def _flood(count: int, size: int, limit: int) -> None:
    app = Stuck(limit)
    receiver, sender = node([app], ["tcp://127.0.0.1:0"]), node([], [])
    await receiver.start()
    await sender.start()
    try:
        peer = await sender.connect(receiver.addresses[0])
        sent = 0

        async def send_all() -> None:
            nonlocal sent
            for i in range(count):
                await sender.send(peer, "big", bytes([i]) * size)
                sent += 1

        sending = asyncio.ensure_future(send_all())
        mailbox = mailbox_of(receiver)
        most = 0
        for _ in range(40):  # 2 s with the handler stuck
            await asyncio.sleep(0.05)
            most = max(most, mailbox._bytes)
        # The mailbox held no more than its bound and one message more ...
        assert 0 < most <= limit + size + 1024, most
        # ... and the sender met the backpressure: its sends wait, its outbox is full.
        assert not sending.done() and sent < count, sent
        channel = sender._table.peers[peer].channels[0]
        assert channel._outbox_bytes > 0
        app.gate.set()
        await asyncio.wait_for(sending, 30)
        for _ in range(600):  # bounded: 30 s
            if len(app.seen) == count:
                break
            await asyncio.sleep(0.05)
        assert app.seen == list(range(count))  # every one, in order
        assert len(mailbox) == 0 and mailbox._bytes == 0
    finally:
        await sender.close()
        await receiver.close()


async def test_large_messages_to_a_stuck_handler_fill_the_mailbox_by_bytes() -> None:
    await _flood(40, MIB, 4 * MIB)


async def test_messages_larger_than_the_bound_are_still_delivered_one_at_a_time() -> None:
    # Each message alone is over the bound: an empty mailbox takes it (never a
    # deadlock), a mailbox holding one takes no other until that one is handled.
    await _flood(16, 2 * MIB, MIB)
