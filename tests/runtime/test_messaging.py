"""Messaging between real in-process nodes, over tcp-transport and memory-transport alike."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from typing import Any

import pytest
from p2phost_json_codec import JsonCodec
from recorder_app import Recorder

from p2phost._runtime import Node
from p2phost._runtime.node._connections import Connections
from p2phost_sdk import (
    App,
    ConnectionClosed,
    FrameTooLarge,
    Identity,
    Message,
    PeerUnavailable,
    RemoteError,
    RequestTimeout,
    handler,
)
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode, build_node


def channels(node: Node, peer_id: str) -> int:
    peer = node._table.get(peer_id)
    return 0 if peer is None else len([c for c in peer.channels if not c.ended])


async def test_send_and_request(make_node: MakeNode) -> None:
    recorder = Recorder()
    server = await make_node([recorder])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    assert peer == server.peer_id
    await client.send(peer, "record", {"n": 1})
    assert await client.request(peer, "record", {"n": 2}) == 2
    assert recorder.records[client.peer_id] == [{"n": 1}, {"n": 2}]
    # An address works wherever a peer id does; the connection is reused.
    assert await client.request(server.addresses[0], "records", None) == {
        "records": {client.peer_id: [{"n": 1}, {"n": 2}]}, "overlaps": 0}
    assert len(client.peers()) == 1
    assert client.peers()[0].topics == {"record", "slow", "boom", "records", "count", "publish"}


async def test_a_raising_handler_answers_with_an_error_and_the_node_keeps_running(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_node([Recorder()])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    with pytest.raises(RemoteError) as failure:
        await client.request(peer, "boom", "x")
    assert "RuntimeError: boom on purpose ('x')" in str(failure.value)
    # The peer's text is cut as any words a peer sends: one line, bounded.
    with pytest.raises(RemoteError) as failure:
        await client.request(peer, "boom", "\x1b[2J\n" * 10_000)
    assert len(failure.value.remote_message) <= 300
    assert failure.value.remote_message.isprintable()
    await client.send(peer, "boom", "one-way")  # no reply to send; the node logs it
    assert await client.request(peer, "record", 1) == 1
    assert "the 'boom' handler failed" in caplog.text


async def test_a_burst_of_one_way_messages_is_handled_in_order_and_counted_exactly(
    make_node: MakeNode,
) -> None:
    # One-way messages take the mailbox's direct path (the handler's coroutine alone):
    # each is still handled once, in order, and counted received and handled (or failed).
    recorder = Recorder()
    server = await make_node([recorder])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    for n in range(3000):
        await client.send(peer, "record", n)
    for n in range(5):
        await client.send(peer, "boom", n)
    assert await client.request(peer, "count", None) == 3000
    assert recorder.records[client.peer_id] == list(range(3000))
    stats = server.delivery.stats
    await wait_until(lambda: stats.get("boom", "failed") == 5, 5, "the failures counted")
    assert (stats.get("record", "received"), stats.get("record", "handled")) == (3000, 3000)
    assert stats.get("boom", "handled") == 0
    assert client.delivery.stats.get("record", "sent") == 3000


async def test_unknown_topic_and_timeout(make_node: MakeNode) -> None:
    server = await make_node([Recorder(delay=3.0)])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    with pytest.raises(RemoteError, match="no app on this node handles topic 'nope'"):
        await client.request(peer, "nope", None)
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"within 0\.2s"):
        await client.request(peer, "slow", None, timeout=0.2)
    assert time.monotonic() - started < 2.0  # the answer would take 3 s


async def test_each_request_times_out_at_its_own_deadline(make_node: MakeNode) -> None:
    server = await make_node([Recorder(delay=0.5)])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])

    async def timed_out_after(timeout: float) -> float:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            await client.request(peer, "slow", timeout, timeout=timeout)
        return time.monotonic() - started

    longer, shorter = await asyncio.gather(timed_out_after(0.3), timed_out_after(0.1))
    assert 0.1 <= shorter < 0.25 and 0.3 <= longer < 0.45, (shorter, longer)


async def test_a_reply_from_another_peer_leaves_the_request_waiting_for_its_own(
    make_node: MakeNode
) -> None:
    """A peer that answers a request sent to someone else (an id it guessed: ids are a
    counter) is ignored: the request keeps its timer and gets the real reply."""
    from p2phost._runtime.wire._envelope import ANSWER, VERSION, Kind

    server = await make_node([Recorder(delay=0.3)])
    client = await make_node()
    intruder = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    towards_client = await intruder.connect(client.addresses[0])
    request = asyncio.ensure_future(client.request(peer, "slow", 1, timeout=5.0))
    await wait_until(lambda: bool(client._dispatch._pending), 5, "the request sent")
    (waiting,) = list(client._dispatch._pending)
    channel = intruder._table.peers[towards_client].best()
    assert channel is not None
    channel.post(ANSWER.pack(VERSION, Kind.REPLY, 999_999, waiting) + b"\xa4fake")
    assert await asyncio.wait_for(request, 5) == 1  # the server's reply, not the forged one
    with pytest.raises(RequestTimeout):  # and a request still times out after a forgery
        second = asyncio.ensure_future(client.request(peer, "slow", 1, timeout=0.1))
        await wait_until(lambda: bool(client._dispatch._pending), 5, "the request sent")
        (waiting,) = list(client._dispatch._pending)
        channel.post(ANSWER.pack(VERSION, Kind.REPLY, 1_000_000, waiting) + b"\xa4fake")
        await asyncio.wait_for(second, 2)


async def test_publish_reaches_every_subscriber_and_only_them(make_node: MakeNode) -> None:
    recorders = [Recorder() for _ in range(3)]
    subscribers = [await make_node([r]) for r in recorders]
    bystander = await make_node()
    publisher = await make_node(listen=[])
    for node in (*subscribers, bystander):
        await publisher.connect(node.addresses[0])
    assert await publisher.publish("record", {"news": 1}) == 3
    assert await publisher.publish("nobody-handles-this", {}) == 0
    await wait_until(lambda: all(r.records for r in recorders), 5, "every subscriber got it")
    assert [r.records for r in recorders] == [{publisher.peer_id: [{"news": 1}]}] * 3


async def test_one_peer_in_order_one_at_a_time_peers_concurrently(make_node: MakeNode) -> None:
    recorder = Recorder(delay=0.0005)
    server = await make_node([recorder])
    senders = [await make_node(listen=[]) for _ in range(3)]
    for sender in senders:
        await sender.connect(server.addresses[0])

    async def flood(sender: Node) -> None:
        for i in range(300):
            await sender.send(server.peer_id, "slow", i)

    await asyncio.gather(*(flood(s) for s in senders))
    await wait_until(lambda: sum(map(len, recorder.records.values())) == 900, 20, "900 handled")
    for sender in senders:
        assert recorder.records[sender.peer_id] == list(range(300))
    assert recorder.overlaps == 0, "two messages of one peer were handled at once"
    assert recorder.max_busy > 1, "different peers' messages were never handled concurrently"


async def test_a_slow_handler_slows_the_sender_and_loses_nothing(make_node: MakeNode) -> None:
    recorder = Recorder(delay=0.002, mailbox_size=4)
    # Small buffers everywhere, so that 300 messages cannot all hide in them.
    small = {"capacity": 4, "outbox_limit": 16 * 1024, "buffer_size": 32 * 1024}
    server = await make_node([recorder], **small)
    sender = await make_node(listen=[], **small)
    peer = await sender.connect(server.addresses[0])
    body = "x" * 4096
    in_flight = 0
    for i in range(300):
        await sender.send(peer, "slow", [i, body])
        in_flight = max(in_flight, i + 1 - len(recorder.records.get(sender.peer_id, [])))
    await wait_until(lambda: len(recorder.records.get(sender.peer_id, [])) == 300, 20,
                     "all 300 handled")
    assert [r[0] for r in recorder.records[sender.peer_id]] == list(range(300))
    # Mailbox, both outboxes, the transport's buffers: far fewer than 300 can wait anywhere.
    assert in_flight < 200, f"the sender was not slowed: {in_flight} messages in flight"


async def test_a_message_over_twice_the_outbox_limit_waits_for_a_slow_reader(
        make_node: MakeNode) -> None:
    # A frame larger than the outbox's slack waits alone in the outbox while the peer,
    # its mailbox full, reads nothing: the keepalive pings posted behind it meanwhile
    # must not count as a peer that does not read (the connection was closed, the send
    # failed with PeerUnavailable).
    recorder = Recorder(delay=0.05, mailbox_size=1)
    small = {"capacity": 4, "outbox_limit": 16 * 1024, "buffer_size": 32 * 1024,
             "keepalive_interval": 0.02}
    server = await make_node([recorder], **small)
    sender = await make_node(listen=[], **small)
    peer = await sender.connect(server.addresses[0])
    body = "x" * 150_000  # over 2 * 16 KiB + 64 KiB: alone in the outbox
    for i in range(20):
        await sender.send(peer, "slow", [i, body])
    await wait_until(lambda: len(recorder.records.get(sender.peer_id, [])) == 20, 20,
                     "all 20 handled")
    assert [r[0] for r in recorder.records[sender.peer_id]] == list(range(20))


async def test_lifecycle_events_reach_the_app_in_order(make_node: MakeNode) -> None:
    recorder = Recorder()
    server = await make_node([recorder])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    await client.request(peer, "record", 1)
    await client.close()
    await wait_until(lambda: len(recorder.events) == 2, 5, "connected then lost")
    assert recorder.events == [("connected", client.peer_id), ("lost", client.peer_id)]
    assert server.peers() == []


async def test_disconnect_says_goodbye_and_both_ends_see_the_peer_leave(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="p2phost.node")
    recorder = Recorder()
    server = await make_node([recorder])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    await client.send(peer, "record", 1)  # queued before the goodbye: still delivered
    assert await client.disconnect(peer, reason="done with it")
    assert client.peers() == []
    await wait_until(lambda: not server.peers() and len(recorder.events) == 2, 5,
                     "the server sees the client leave")
    assert recorder.records[client.peer_id] == [1]
    assert recorder.events == [("connected", client.peer_id), ("lost", client.peer_id)]
    assert "done with it" in caplog.text
    assert not await client.disconnect(peer)  # nothing left to close
    assert await client.request(server.addresses[0], "record", 2) == 2  # dials again


async def test_the_codec_is_the_first_of_the_diallers_that_both_have(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_node([Recorder()], codecs=["application/json", "application/msgpack"])
    msgpack_first = await make_node(listen=[], codecs=["application/msgpack",
                                                       "application/json"])
    peer = await msgpack_first.connect(server.addresses[0])
    assert msgpack_first.peers()[0].codec == "application/msgpack"
    assert await msgpack_first.request(peer, "records", None) == {"records": {}, "overlaps": 0}
    only_msgpack = await make_node([Recorder()], codecs=["application/msgpack"])
    json_only = await make_node(listen=[])
    with pytest.raises(PeerUnavailable, match="no codec in common"):
        await json_only.connect(only_msgpack.addresses[0])
    await wait_until(lambda: "no codec in common" in caplog.text, 5, "the listener logs it")


async def test_two_nodes_dialling_each_other_keep_one_connection(make_node: MakeNode) -> None:
    a_app, b_app = Recorder(), Recorder()
    a = await make_node([a_app])
    b = await make_node([b_app])
    await asyncio.gather(a.connect(b.addresses[0]), b.connect(a.addresses[0]))
    await wait_until(lambda: channels(a, b.peer_id) == 1 and channels(b, a.peer_id) == 1, 5,
                     "one connection left on each side")
    for i in range(100):
        await a.send(b.peer_id, "record", i)
        await b.send(a.peer_id, "record", i)
    assert await a.request(b.peer_id, "record", 100) == 101
    assert await b.request(a.peer_id, "record", 100) == 101
    assert b_app.records[a.peer_id] == list(range(101))
    assert a_app.events == [("connected", b.peer_id)], "one connect event, no loss"


async def test_keepalive_closes_a_peer_that_went_silent(
    make_node: MakeNode, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.runtime.rawpeer import RawPeer

    server = await make_node([Recorder()], keepalive_interval=0.1, keepalive_timeout=0.5)
    silent = await RawPeer.connect(kind, server.addresses[0])
    await wait_until(lambda: len(server.peers()) == 1, 5, "the raw peer is connected")
    await wait_until(lambda: not server.peers(), 5, "the silent peer is dropped")
    assert "keepalive timeout" in caplog.text
    assert await silent.pings_until_closed() >= 1, "the node pinged before giving up"


async def test_a_restarted_peer_is_redialled(kind: str) -> None:
    identity = Identity.generate()
    if kind == "tcp":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    else:
        address = "mem://restarted-peer"
    first = build_node(kind, [Recorder()], listen=[address], identity=identity)
    await first.start()
    dialler = build_node(kind, listen=[], connect=[address])
    await dialler.start()
    try:
        await wait_until(lambda: len(dialler.peers()) == 1, 5, "connected")
        await first.close()
        await wait_until(lambda: not dialler.peers(), 5, "the loss is noticed")
        second = build_node(kind, [Recorder()], listen=[address], identity=identity)
        await second.start()
        try:
            await wait_until(lambda: len(dialler.peers()) == 1, 10, "redialled")
            assert await dialler.request(identity.peer_id, "record", "again") == 1
        finally:
            await second.close()
    finally:
        await dialler.close()
        await first.close()


async def test_shutdown_drains_the_mailbox(make_node: MakeNode, kind: str) -> None:
    recorder = Recorder(delay=0.005)
    server = build_node(kind, [recorder])
    await server.start()
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    for i in range(50):
        await client.send(peer, "slow", i)
    await server.close()
    assert recorder.records[client.peer_id] == list(range(50))
    with pytest.raises(PeerUnavailable):
        await client.send(peer, "slow", 50)


async def test_unreachable_and_oversized(make_node: MakeNode, kind: str) -> None:
    server = await make_node([Recorder()], max_frame_size=64 * 1024)
    client = await make_node(listen=[], max_frame_size=64 * 1024, dial_timeout=2.0)
    nowhere = "tcp://127.0.0.1:1" if kind == "tcp" else "mem://nobody-here"
    started = time.monotonic()
    with pytest.raises(PeerUnavailable, match="cannot reach"):
        await client.send(nowhere, "record", 1)
    assert time.monotonic() - started < 3.0
    with pytest.raises(PeerUnavailable, match="not connected"):
        await client.send(Identity.generate().peer_id, "record", 1)
    peer = await client.connect(server.addresses[0])
    with pytest.raises(FrameTooLarge, match="max-frame-size") as own:
        await client.send(peer, "record", "x" * 70_000)
    assert own.value.fix == ("send smaller bodies, or raise max-frame-size in [node] of the "
                             "manifest on both ends (each refuses frames over its own)")
    assert await client.request(peer, "record", "still fine") == 1


async def test_an_oversized_message_is_encoded_once(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The send path encodes the body, finds the frame too big and refuses it with that
    # size: the codec is not asked to encode the same body again to say so.
    server = await make_node([Recorder()], max_frame_size=64 * 1024)
    client = await make_node(listen=[], max_frame_size=64 * 1024)
    peer = await client.connect(server.addresses[0])
    await client.send(peer, "record", "small")  # the topic's header is packed from now on
    bodies: list[Any] = []
    encode = JsonCodec.encode

    def counted(self: JsonCodec, body: Any) -> bytes:
        bodies.append(body)
        return encode(self, body)

    monkeypatch.setattr(JsonCodec, "encode", counted)
    with pytest.raises(FrameTooLarge, match=r"a message on 'record' is 700\d\d bytes"):
        await client.send(peer, "record", "x" * 70_000)
    assert len(bodies) == 1


async def test_a_message_over_the_peers_announced_limit_fails_only_its_sender(
    make_node: MakeNode,
) -> None:
    # The server takes at most 64 KiB, the client would send 1 MiB: the client learns
    # the server's limit from its hello and refuses the message, so the connection and
    # the next request are unharmed.
    server = await make_node([Recorder()], max_frame_size=64 * 1024)
    client = await make_node(listen=[], max_frame_size=1 << 20)
    peer = await client.connect(server.addresses[0])
    with pytest.raises(FrameTooLarge, match=r"the peer at .* announced\) \(fix: ") as theirs:
        await client.request(peer, "record", "x" * 200_000)
    assert theirs.value.fix.startswith("send it in smaller parts, or raise max-frame-size")
    assert await client.request(peer, "record", "still fine") == 1


async def test_the_peer_limit_refuses_more_peers(make_node: MakeNode) -> None:
    server = await make_node([Recorder()], peer_limit=1)
    first = await make_node(listen=[])
    second = await make_node(listen=[])
    await first.connect(server.addresses[0])
    with pytest.raises(PeerUnavailable, match="peer limit reached"):
        await second.connect(server.addresses[0])


async def test_a_peer_refused_for_the_limit_late_logs_one_refusal_and_never_connects(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server admits the dialler (room for one), then dials a peer of its own while
    # the dialler's hello is on its way: when the hello arrives the limit is reached.
    # The dialler is refused in place of the server's hello, so neither side logs it as
    # connected, then disconnected; the server logs and counts one refusal.
    caplog.set_level(logging.INFO, logger="p2phost")
    accepted, go_on = asyncio.Event(), asyncio.Event()
    accept = Connections.accept

    async def held(self: Connections, transport: Any, connection: Any) -> None:
        recv = connection.recv

        async def recv_after_the_dial() -> bytes:
            connection.recv = recv
            accepted.set()
            await go_on.wait()
            return bytes(await recv())

        if not accepted.is_set():
            connection.recv = recv_after_the_dial
        await accept(self, transport, connection)

    monkeypatch.setattr(Connections, "accept", held)
    server = await make_node([Recorder()], peer_limit=1)
    other = await make_node()
    dialler = await make_node(listen=[])
    dialling = asyncio.create_task(dialler.connect(server.addresses[0]))
    await asyncio.wait_for(accepted.wait(), 10)
    await server.connect(other.addresses[0])
    caplog.clear()
    go_on.set()
    with pytest.raises(PeerUnavailable, match=r"peer limit reached \(1\)"):
        await dialling
    await asyncio.sleep(0.2)  # whatever the refusal would still log
    lines = [r.getMessage() for r in caplog.records
             if r.name.startswith("p2phost") and r.levelno >= logging.INFO]
    assert len(lines) == 1, lines
    assert lines[0].startswith("refused a connection from ")
    assert lines[0].endswith(": peer limit reached (1)")
    stats = server.stats()["connections"]
    assert (stats["refused"], stats["failed_handshakes"], stats["peers"]) == (1, 0, 1)
    assert server.stats()["handshake_failures"]["accepted"] == {}
    assert dialler.stats()["handshake_failures"]["dialled"] == {"peer-limit": 1}
    assert dialler.peers() == []


class _Cancelling(App):
    """Handlers that await a future someone else cancels, or that wait until closed."""

    name = "cancelling"

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.waiting = asyncio.Event()
        self.ended: list[str] = []

    @handler("victim")
    async def victim(self, message: Message) -> str:
        self.seen.append(message.body)
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)  # someone else cancels it
        await future
        return "unreachable"

    @handler("next")
    async def next(self, message: Message) -> Any:
        self.seen.append(message.body)
        return message.body

    @handler("hang")
    async def hang(self, message: Message) -> None:
        self.waiting.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise


async def test_a_handler_failing_with_a_foreign_cancellation_is_answered_as_an_error(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    app = _Cancelling()
    server = await make_node([app])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    started = time.monotonic()
    with pytest.raises(RemoteError) as failure:
        await client.request(peer, "victim", 1, timeout=10)
    assert time.monotonic() - started < 5  # answered, not timed out
    assert "the handler was cancelled" in str(failure.value)
    # The peer's mailbox task goes on: later requests, in order, then a one-way one.
    assert [await client.request(peer, "next", n, timeout=5) for n in (2, 3)] == [2, 3]
    await client.send(peer, "victim", 4)
    assert await client.request(peer, "next", 5, timeout=5) == 5
    assert app.seen == [1, 2, 3, 4, 5]
    stats = server.delivery.stats
    await wait_until(lambda: stats.get("victim", "failed") == 2, 5, "the failures counted")
    assert stats.get("victim", "handled") == 0
    assert "the 'victim' handler failed" in caplog.text


async def test_closing_the_node_still_cancels_a_running_handler(
    make_node: MakeNode, kind: str
) -> None:
    app = _Cancelling()
    server = build_node(kind, [app], drain_timeout=0.3)
    await server.start()
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    pending = asyncio.ensure_future(client.request(peer, "hang", None, timeout=30))
    await asyncio.wait_for(app.waiting.wait(), 5)
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 5  # the drain timeout, then cancelled
    assert app.ended == ["cancelled"]
    with pytest.raises((PeerUnavailable, RemoteError, ConnectionClosed)):
        await asyncio.wait_for(pending, 10)


def test_a_send_without_a_key_is_a_call_cpython_specializes() -> None:
    """On CPython 3.11 a call of a function with keyword-only parameters never
    specializes (``CALL_PY_WITH_DEFAULTS`` fills positional defaults only), so every
    ``messenger.send(peer, topic, body)`` took the generic call: 0.6 % of a one-way
    message's instructions (docs/performance.md). ``key`` stays optional; callers pass it
    by name, as the SDK's :class:`~p2phost_sdk.Messenger` declares it."""
    code = Node.send.__code__
    assert not code.co_kwonlyargcount
    assert not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    assert inspect.signature(Node.send).parameters["key"].default is None
