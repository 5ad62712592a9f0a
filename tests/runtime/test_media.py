"""What the runtime promises media that redeliver (brokers, databases): acks, frame limits."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from recorder_app import Recorder

from p2phost._runtime import Node, NodeOptions, decode
from p2phost_sdk import AcceptHandler, Connection, FrameTooLarge, Identity, Listener, Transport
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import JsonCodec, MemoryTransport

_names = itertools.count()


class Acked(bytes):
    """A frame that its medium holds until the node acknowledges it."""

    ack: Callable[[], None]


class AckingConnection(Connection):
    """A memory connection whose frames must be acknowledged; records when they are."""

    def __init__(self, inner: Connection, log: list[tuple[str, object]], limit: int | None
                 ) -> None:
        self.inner, self.log = inner, log
        self.max_frame_size = limit
        self.remote_address = inner.remote_address

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame)

    async def recv(self) -> bytes:
        frame = Acked(await self.inner.recv())
        envelope = decode(frame)
        what = (envelope.kind.name, envelope.body)
        frame.ack = lambda: self.log.append(what)
        return frame

    async def close(self) -> None:
        await self.inner.close()


class AckingTransport(Transport):
    schemes = ("mem",)

    def __init__(self, log: list[tuple[str, object]], limit: int | None = None) -> None:
        self.inner, self.log, self.limit = MemoryTransport(), log, limit

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        async def wrapped(connection: Connection) -> None:
            await accept(AckingConnection(connection, self.log, self.limit))
        return await self.inner.listen(address, wrapped)

    async def dial(self, address: str, *, timeout: float) -> Connection:
        return AckingConnection(await self.inner.dial(address, timeout=timeout), self.log,
                                self.limit)


def node(transport: Transport, apps: list[Recorder], listen: bool) -> Node:
    return Node(Identity.generate(), transports={"mem": transport},
                codecs={"application/json": JsonCodec()}, apps=apps,
                options=NodeOptions(listen=[f"mem://media-{next(_names)}"] if listen else []))


async def test_messages_are_acked_after_their_handler_ran() -> None:
    acks: list[tuple[str, object]] = []
    recorder = Recorder(delay=0.01)
    server = node(AckingTransport(acks), [recorder], listen=True)
    client = node(MemoryTransport(), [], listen=False)
    async with server, client:
        peer = await client.connect(server.addresses[0])
        for i in range(5):
            await client.send(peer, "slow", i)
        await wait_until(lambda: len([a for a in acks if a[0] == "MESSAGE"]) == 5, 5,
                         "five message acks")
        assert [a for a in acks if a[0] == "MESSAGE"] == [("MESSAGE", str(i).encode())
                                                          for i in range(5)]
        assert acks[0][0] == "HELLO", "control frames are acked at once"
        assert recorder.records[client.peer_id] == list(range(5))


async def test_a_message_over_the_mediums_limit_is_refused_before_sending() -> None:
    acks: list[tuple[str, object]] = []
    server = node(MemoryTransport(), [Recorder()], listen=True)
    client = node(AckingTransport(acks, limit=1000), [], listen=False)
    async with server, client:
        peer = await client.connect(server.addresses[0])
        with pytest.raises(FrameTooLarge, match="message size limit of the medium"):
            await client.send(peer, "record", "x" * 2000)
        assert await client.request(peer, "record", "small") == 1
