"""Push-mode receive: frames taken in the transport's callback keep every guarantee.

Over tcp-transport (and noise-security or tls-security on it, which decrypt each read in
that callback) a node takes each read's frames in the protocol's ``data_received``: a
full mailbox must pause the socket's reading and resume it once there is room, a peer's
messages must keep their order, and a handler's failure or timeout must leave the
connection alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from p2phost._runtime import Hello, Kind, Node, NodeOptions, decode, encode
from p2phost._runtime.wire._channel import Channel
from p2phost_sdk import App, Identity, Message, RemoteError, Security, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import channel_of, tcp_pair

for _name in ("tcp-transport", "msgpack-codec", "noise-security", "tls-security"):
    use_plugin_source(_name)

from p2phost_msgpack_codec import MsgpackCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_noise_security._connection import NoiseConnection  # noqa: E402
from p2phost_tcp_transport import TcpConnection, TcpTransport  # noqa: E402
from p2phost_tls_security import TlsSecurity  # noqa: E402
from p2phost_tls_security._connection import flush  # noqa: E402

SECURITY: dict[str, Callable[[], Sequence[Security]]] = {
    "plain": lambda: (), "noise": lambda: (NoiseSecurity(),), "tls": lambda: (TlsSecurity(),),
}


class Gated(App):
    """Records bodies per sender; ``gated`` waits for the gate, ``late`` times out."""

    name = "gated"

    def __init__(self, mailbox_size: int) -> None:
        self.mailbox_size = mailbox_size  # type: ignore[misc]
        self.gate = asyncio.Event()
        self.records: list[Any] = []

    @handler("gated")
    async def gated(self, message: Message) -> None:
        await self.gate.wait()
        self.records.append(message.body)

    @handler("late")
    async def late(self, message: Message) -> str:
        async with asyncio.timeout(0.01):  # the handler's own timeout, in its own task
            await asyncio.sleep(10)
        return "never"

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        return message.body


@pytest.fixture(params=sorted(SECURITY))
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Node, Node, Gated]]:
    """A server with a :class:`Gated` app of mailbox 8, and a client connected to it."""
    app = Gated(mailbox_size=8)
    # (An outbox limit of 64 KiB: what waits in memory behind a full mailbox is bounded
    # by it, below what the tests send.)
    async with tcp_pair(app, SECURITY[request.param](), options={"outbox_limit": 65536},
                        read_size=65536) as (server, client):
        yield server, client, app


def tcp_of(channel: Channel) -> TcpConnection:
    connection = channel.connection
    while not isinstance(connection, TcpConnection):  # a security plugin's wraps it
        connection = connection._inner  # type: ignore[attr-defined]
    return connection


def reading(channel: Channel) -> bool:
    return bool(tcp_of(channel)._writer.transport.is_reading())  # type: ignore[attr-defined]


async def test_both_ends_take_frames_in_push_mode(nodes: tuple[Node, Node, Gated]) -> None:
    server, client, _ = nodes
    for node, other in ((server, client), (client, server)):
        channel = channel_of(node, other.peer_id)
        assert tcp_of(channel)._sink is not None, "the channel reads with recv_many"
        assert await client.request(server.peer_id, "echo", b"hi", timeout=5) == b"hi"


async def test_a_full_mailbox_pauses_reading_and_order_holds(
    nodes: tuple[Node, Node, Gated],
) -> None:
    server, client, app = nodes
    channel = channel_of(server, client.peer_id)
    body = b"x" * 2048

    async def flood() -> None:
        for i in range(400):
            await client.send(server.peer_id, "gated", [i, body])

    sending = asyncio.ensure_future(flood())
    # The mailbox holds 8; the rest waits behind a paused socket, and here only up to
    # the outbox limit (read on meanwhile, for the answers among them: see _reader).
    await wait_until(lambda: channel.stalled, 10, "the reader waits for mailbox room")
    await wait_until(lambda: not reading(channel), 10, "a full mailbox pauses reading")
    await asyncio.sleep(0.2)
    assert channel.stalled and not reading(channel)
    # (and one read's frames past it: tcp reads 64 KiB, tls-security opens what its
    # 256 KiB chunk held)
    assert channel._held <= channel._limit + 320 * 1024, "more held than the limit"
    app.gate.set()
    await asyncio.wait_for(sending, 20)
    await wait_until(lambda: len(app.records) == 400, 20, "all 400 handled")
    assert [r[0] for r in app.records] == list(range(400))
    assert reading(channel), "reading was not resumed once the mailbox had room"
    assert await client.request(server.peer_id, "echo", b"after", timeout=5) == b"after"


async def test_a_handler_timeout_leaves_the_connection_alone(
    nodes: tuple[Node, Node, Gated],
) -> None:
    server, client, _ = nodes
    before = channel_of(server, client.peer_id)
    for _ in range(3):
        with pytest.raises(RemoteError, match="TimeoutError"):
            await client.request(server.peer_id, "late", None, timeout=5)
        assert await client.request(server.peer_id, "echo", [1, 2], timeout=5) == [1, 2]
    assert channel_of(server, client.peer_id) is before and not before.ended


async def test_a_burst_of_requests_is_answered_in_order(
    nodes: tuple[Node, Node, Gated],
) -> None:
    server, client, _ = nodes
    replies = await asyncio.gather(
        *(client.request(server.peer_id, "echo", i, timeout=10) for i in range(500)))
    assert replies == list(range(500))


async def test_a_peer_that_leaves_while_reading_is_paused_leaves_cleanly(
    nodes: tuple[Node, Node, Gated], recwarn: pytest.WarningsRecorder,
) -> None:
    server, client, app = nodes
    channel = channel_of(server, client.peer_id)

    async def flood() -> None:
        for i in range(400):
            await client.send(server.peer_id, "gated", [i, b"y" * 2048])

    sending = asyncio.ensure_future(flood())
    await wait_until(lambda: channel.stalled, 10, "the reader waits for mailbox room")
    sending.cancel()
    closing = asyncio.ensure_future(client.close())
    await asyncio.sleep(0.2)
    # The server reads on (and so sees the end) once its mailbox has room again.
    app.gate.set()
    await asyncio.wait_for(closing, 20)
    await wait_until(lambda: channel.ended, 10, "the server ends the channel")
    got = [r[0] for r in app.records]
    assert len(got) > 8 and got == list(range(len(got))), "not handled in order"
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_a_tls_peers_last_frames_before_its_close_notify_are_handled() -> None:
    # Its last messages and its close_notify in one read: each of those messages is
    # handled (in order) before the connection ends.
    app = Gated(mailbox_size=8)
    app.gate.set()
    server = Node(Identity.generate(), transports={"tcp": TcpTransport()},
                  codecs={"application/msgpack": MsgpackCodec()}, security=[TlsSecurity()],
                  apps=[app], options=NodeOptions(listen=["tcp://127.0.0.1:0"]))
    await server.start()
    try:
        identity, codec = Identity.generate(), MsgpackCodec()
        raw = await TcpTransport().dial(server.addresses[0], timeout=5)
        secured = await TlsSecurity().secure(raw, identity=identity, initiator=True,
                                             expected_peer_id=None, timeout=5)
        await secured.send(Hello(peer_id=identity.peer_id, codecs=(codec.content_type,),
                                 session="raw", nonce="raw").to_frame())
        assert decode(await asyncio.wait_for(secured.recv(), 5)).kind is Kind.HELLO
        frames = [encode(Kind.MESSAGE, i + 1, b"gated", codec.encode(i)) for i in range(100)]
        tls = secured._tls  # type: ignore[attr-defined]
        tls.sendall(b"".join(len(f).to_bytes(4, "big") + f for f in frames))
        tls.shutdown()
        await flush(tls, raw, 1 << 20)  # one tcp frame: the records, then close_notify
        await wait_until(lambda: len(app.records) == 100, 10,
                         f"100 messages handled (got {len(app.records)})")
        assert app.records == list(range(100))
        await secured.close()
    finally:
        await server.close()


async def test_a_security_plugin_bug_in_push_mode_ends_only_that_connection_and_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # _open raising something other than a TransportError, in the transport's callback:
    # the connection ends with the error logged as its reason (not asyncio's "Fatal
    # error", not "the node shut down"), and the node serves its other peers.
    caplog.set_level(logging.INFO, logger="p2phost.node")
    made: list[Node] = []
    for listen in (["tcp://127.0.0.1:0"], [], []):
        node = Node(Identity.generate(), transports={"tcp": TcpTransport()},
                    codecs={"application/msgpack": MsgpackCodec()},
                    security=[NoiseSecurity()], apps=[Gated(8)] if listen else [],
                    options=NodeOptions(listen=listen))
        await node.start()
        made.append(node)
    server, buggy, other = made
    try:
        for client in (buggy, other):
            await client.connect(server.addresses[0])
        opened, received = NoiseConnection._open, NoiseConnection.frames_received

        def open_or_fail(self: NoiseConnection, messages: list[bytes]) -> None:
            if self.remote_peer_id == buggy.peer_id:
                raise RuntimeError("a bug in the plugin")
            opened(self, messages)

        def through_open(self: NoiseConnection, frames: list[bytes]) -> None:
            # The buggy peer's reads all take the general path, which calls _open: a lone
            # frame's shortcut does not, and the test waited for the next read (a keepalive
            # ping's, 2.5 s later, or none within its 10 s under load).
            if self.remote_peer_id == buggy.peer_id:
                super(NoiseConnection, self).frames_received(frames)
            else:
                received(self, frames)

        monkeypatch.setattr(NoiseConnection, "_open", open_or_fail)
        monkeypatch.setattr(NoiseConnection, "frames_received", through_open)
        await buggy.send(server.peer_id, "gated", 1)
        await wait_until(lambda: buggy.peer_id not in {p.peer_id for p in server.peers()},
                         10, "the server drops the connection")
        assert await other.request(server.peer_id, "echo", 2, timeout=5) == 2
    finally:
        for node in reversed(made):
            await node.close()
    text = caplog.text
    assert "Fatal error" not in text and "task 'channel" not in text
    gone = [line for line in text.splitlines() if f"disconnected from {buggy.peer_id}" in line]
    assert gone and "internal error: RuntimeError: a bug in the plugin" in gone[0], gone


def test_a_channel_keeps_its_fields_in_slots() -> None:
    """A channel's fields are read per frame sent and received; with its 50-odd fields in
    an instance dict (more than CPython 3.11 keeps inline) each read cost more than a
    slot's: 1.5 % of a server's instructions per request (docs/performance.md). A field
    added to Channel or Reader must go in its ``__slots__``: no instance dict."""
    assert Channel.__dictoffset__ == 0
