"""Two nodes that flood each other with requests are both answered.

Before: each node read the other's requests out of the kernel's buffers faster than its
answers could leave, its outbox filled, it stopped reading, and so did the other: after
the write timeout both closed with "the peer does not read" and every request failed
(2,000 of 16 KiB each way; 50,000 of 100 B; 2,000 small ones with 64 KiB answers). Now
a node's requests in flight to a peer are bounded (``RequestWindow``), and a reader
waiting for room (in the outbox, or the app's mailbox) reads on in push mode, taking
the answers to its own requests at once, up to the outbox limit of other frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from p2phost._runtime import Kind, Node, NodeOptions, encode
from p2phost._runtime.messaging._stats import Tally
from p2phost._runtime.wire._reader import FRAME_COST
from p2phost._runtime.wire._window import FEW, RequestWindow
from p2phost_sdk import (
    App,
    ConnectionClosed,
    Identity,
    Message,
    PeerUnavailable,
    RequestTimeout,
    Security,
    handler,
)
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import build_node, channel_of
from tests.runtime.rawpeer import hello_frame, length_prefixed

for _name in ("tcp-transport", "memory-transport", "msgpack-codec", "noise-security"):
    use_plugin_source(_name)

from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_msgpack_codec import MsgpackCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402

#: The media the floods run over: tcp pushes each read to the channel, noise-security
#: over it too (decrypted in the callback), memory through the channel's pump.
MEDIA: dict[str, tuple[str, Callable[[], list[Security]]]] = {
    "tcp": ("tcp://127.0.0.1:0", list),
    "tcp+noise": ("tcp://127.0.0.1:0", lambda: [NoiseSecurity()]),
    "memory": ("mem://window-{}", list)}
_numbers = itertools.count()


class Pong(App):
    """Another app, with a mailbox of its own: ``ping`` answers ``b"pong"``."""

    name = "pong"

    @handler("ping")
    async def ping(self, message: Message) -> bytes:
        return b"pong"


class Echo(App):
    """``echo`` answers its body; ``sink`` takes a message; ``held`` answers once let go."""

    name = "echo"

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.go = asyncio.Event()
        self.sunk = 0

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        return message.body

    @handler("sink")
    async def sink(self, message: Message) -> None:
        self.sunk += 1

    @handler("large")
    async def large(self, message: Message) -> Any:
        return bytes(message.body)

    @handler("held")
    async def hold(self, message: Message) -> Any:
        self.held.append(message.body[0])
        await self.go.wait()
        return len(message.body)


@contextlib.asynccontextmanager
async def two_nodes(medium: str = "tcp", first: dict[str, Any] | None = None,
                    **options: Any) -> AsyncIterator[
        tuple[tuple[Node, Echo], tuple[Node, Echo]]]:
    """Two started nodes with :class:`Echo` over ``medium`` (of MEDIA), the first
    connected to the second (``first``: the first node's own options, over
    ``options``)."""
    made: list[tuple[Node, Echo]] = []
    listen, security = MEDIA[medium]
    try:
        for own in (first or {}, {}):
            app = Echo()
            node = Node(Identity.generate(),
                        transports={"tcp": TcpTransport(), "mem": MemoryTransport()},
                        codecs={"application/msgpack": MsgpackCodec()},
                        security=security(), apps=[app, Pong()],
                        options=NodeOptions(listen=[listen.format(next(_numbers))],
                                            **{**options, **own}))
            await node.start()
            made.append((node, app))
        (first, _), (second, _) = made
        await first.connect(second.addresses[0])
        await wait_until(lambda: len(second.peers()) == 1, 5, "the second node sees the first")
        yield made[0], made[1]
    finally:
        for node, _ in reversed(made):
            await node.close()


@pytest.mark.parametrize("medium", sorted(MEDIA))
@pytest.mark.parametrize(("size", "count"), [(16384, 1000), (100, 20000)])
async def test_two_nodes_flooding_each_other_with_requests_are_both_answered(
        medium: str, size: int, count: int) -> None:
    async with two_nodes(medium) as ((a, _), (b, _)):
        body = bytes(size)
        asks = [asyncio.ensure_future(node.request(peer.peer_id, "echo", body, timeout=30))
                for _ in range(count) for node, peer in ((a, b), (b, a))]
        answers = await asyncio.wait_for(asyncio.gather(*asks), 40)
        assert answers == [body] * (2 * count)
        assert len(a.peers()) == len(b.peers()) == 1  # the connection held


@pytest.mark.parametrize("medium", ["tcp", "tcp+noise"])
@pytest.mark.parametrize("answer", ["echo", "large"])
@pytest.mark.parametrize("first", ["no window", "a larger outbox limit"])
async def test_a_peer_without_the_window_or_with_a_larger_one_is_answered_both_ways(
        medium: str, answer: str, first: str) -> None:
    # The window is each node's own rule: a peer without one (older code) sends all its
    # requests at once, and one with a larger outbox limit keeps more in flight than
    # the other reads on. One node keeping the rule is enough for both to read on.
    larger = {"outbox_limit": 8 << 20} if first != "no window" else {}
    async with two_nodes(medium, first=larger, outbox_limit=256 * 1024) as ((a, _), (b, _)):
        if not larger:
            channel_of(a, b.peer_id).window.size = math.inf

        async def ask(node: Node, peer: Node) -> int:
            body = 65536 if answer == "large" else bytes(16384)
            return len(await node.request(peer.peer_id, answer, body, timeout=30))

        asks = [asyncio.ensure_future(ask(node, peer))
                for _ in range(1000) for node, peer in ((a, b), (b, a))]
        answers = await asyncio.wait_for(asyncio.gather(*asks), 40)
        assert answers == [65536 if answer == "large" else 16384] * 2000
        assert len(a.peers()) == len(b.peers()) == 1  # the connection held


@pytest.mark.parametrize("medium", sorted(MEDIA))
async def test_two_nodes_flooding_each_other_with_small_requests_for_large_answers(
        medium: str) -> None:
    # The window holds thousands of these requests: the answers pass the outbox limit,
    # their handlers wait for room, the mailbox fills, and the reader waits for it.
    async with two_nodes(medium) as ((a, _), (b, _)):
        async def ask(node: Node, peer: Node) -> int:  # (4,000 answers of 64 KiB: not kept)
            return len(await node.request(peer.peer_id, "large", 65536, timeout=30))

        asks = [asyncio.ensure_future(ask(node, peer))
                for _ in range(2000) for node, peer in ((a, b), (b, a))]
        assert await asyncio.wait_for(asyncio.gather(*asks), 40) == [65536] * 4000


@pytest.mark.parametrize("medium", ["tcp", "memory"])
async def test_a_node_whose_mailbox_is_full_still_takes_its_answers(medium: str) -> None:
    async with two_nodes(medium) as ((a, app_a), (b, _)):
        app_a.go.clear()
        # b fills a's mailbox for "held" (one handler waits, the rest queue): a's reader
        # waits for mailbox room, and reads on.
        sends = [asyncio.ensure_future(b.send(a.peer_id, "held", bytes([n % 256]) * 1024))
                 for n in range(1100)]
        await asyncio.wait_for(asyncio.gather(*sends), 10)
        channel = a._table.get(b.peer_id).channels[0]  # type: ignore[union-attr]
        await wait_until(lambda: channel.stalled, 10, "a's reader waits for its mailbox")
        assert await a.request(b.peer_id, "echo", b"still", timeout=5) == b"still"
        assert len(app_a.held) == 1  # (the mailbox is still full)
        app_a.go.set()
        await wait_until(lambda: len(app_a.held) == 1100, 10, "every message handled")
        assert app_a.held == list(range(256)) * 4 + list(range(76))


async def test_nodes_flooding_each_other_with_messages_and_requests_are_both_answered(
        ) -> None:
    # Each outbox fills with its own messages: the peer's requests are still answered
    # (room of their own) and read (the reader held them while the outbox passed the
    # limit, so both stopped reading).
    async with two_nodes() as ((a, app_a), (b, app_b)):
        body = bytes(16384)

        async def flood(node: Node, peer: Node) -> None:
            for _ in range(1000):
                await node.send(peer.peer_id, "sink", body)

        floods = [asyncio.ensure_future(flood(a, b)), asyncio.ensure_future(flood(b, a))]
        asks = [asyncio.ensure_future(node.request(peer.peer_id, "echo", body, timeout=30))
                for _ in range(500) for node, peer in ((a, b), (b, a))]
        answers = await asyncio.wait_for(asyncio.gather(*asks, *floods), 40)
        assert answers[:1000] == [body] * 1000
        await wait_until(lambda: app_a.sunk == app_b.sunk == 1000, 20, "every message taken")


async def test_requests_in_flight_to_a_peer_stay_within_half_the_outbox_limit() -> None:
    async with two_nodes(outbox_limit=256 * 1024) as ((client, _), (server, app)):
        window = 128 * 1024
        # Requests of 32 KiB (and a little): four fit the window, the fifth waits.
        asks = [asyncio.ensure_future(client.request(server.peer_id, "held",
                                                     bytes([n]) * 32768, timeout=30))
                for n in range(40)]
        # (One peer's requests are handled one at a time: the first is held, the next
        # three wait in the server's mailbox.)
        def received() -> int:
            return int(server.delivery.stats.get("held", "received"))

        await wait_until(lambda: received() == 4, 5, "four requests at the server")
        await asyncio.sleep(0.3)
        assert received() == 4, "more requests in flight than the window holds"
        # One larger than the whole window goes too, once there is room.
        large = asyncio.ensure_future(client.request(server.peer_id, "held",
                                                     bytes([99]) * (window + 1), timeout=30))
        app.go.set()
        assert await asyncio.wait_for(asyncio.gather(*asks), 20) == [32768] * 40
        assert await asyncio.wait_for(large, 20) == window + 1
        assert app.held == [*range(40), 99]  # in the order they were asked


async def test_one_large_slow_request_holds_back_no_other_request_to_its_peer() -> None:
    # (A request over the whole window, whose handler waits: the next requests, to
    # another app of the peer, go at once, as FEW go whatever their bytes.)
    async with two_nodes() as ((client, _), (server, app)):
        large = asyncio.ensure_future(client.request(server.peer_id, "held",
                                                     bytes(600_000), timeout=30))
        await wait_until(lambda: len(app.held) == 1, 5, "the large request at the server")
        for _ in range(3):
            assert await client.request(server.peer_id, "ping", b"?", timeout=2) == b"pong"
        app.go.set()
        assert await asyncio.wait_for(large, 10) == 600_000


async def test_a_request_waiting_for_the_window_times_out_on_time_and_frees_nothing(
        ) -> None:
    async with two_nodes(outbox_limit=64 * 1024) as ((client, _), (server, app)):
        # Four requests fill the window (32 KiB; FEW go whatever their bytes).
        first = [asyncio.ensure_future(client.request(server.peer_id, "held", bytes(40000),
                                                      timeout=30)) for _ in range(FEW)]
        await wait_until(lambda: len(app.held) == 1, 5, "the first request at the server")
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"'held' request within 0.5s: it was "
                                                 r"never sent: the requests to that peer"):
            await client.request(server.peer_id, "held", bytes(1000), timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert int(server.delivery.stats.get("held", "received")) == FEW  # it never left
        app.go.set()
        assert await asyncio.wait_for(asyncio.gather(*first), 10) == [40000] * FEW
        channel = client._table.get(server.peer_id).channels[0]  # type: ignore[union-attr]
        assert channel.window.in_flight == 0 and not channel.window.waiters


async def test_requests_waiting_for_the_window_fail_when_the_peer_goes() -> None:
    async with two_nodes(outbox_limit=64 * 1024) as ((client, _), (server, app)):
        asks = [asyncio.ensure_future(client.request(server.peer_id, "held", bytes(40000),
                                                     timeout=30)) for _ in range(FEW + 2)]
        await wait_until(lambda: len(app.held) == 1, 5, "the first request at the server")
        await server.close()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*asks, return_exceptions=True), 10)
        assert all(isinstance(o, PeerUnavailable) for o in outcomes), outcomes


@pytest.mark.parametrize("size", [0, 2, 64])
async def test_what_a_stalled_reader_reads_on_is_bounded_even_for_empty_frames(
        size: int) -> None:
    # A peer fills a slow app's mailbox, then floods frames (empty ones too, counted at
    # FRAME_COST each: counted at their length, a flood of them grew the node by 300 MB
    # in 8 s, with no timeout to end it: the node's outbox is empty).
    app = Echo()
    node = build_node("tcp", [app], listen=["tcp://127.0.0.1:0"])
    await node.start()
    try:
        host, port = node.addresses[0].removeprefix("tcp://").rsplit(":", 1)
        peer = Identity.generate()
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(length_prefixed(hello_frame(peer)))
        writer.write(b"".join(length_prefixed(encode(Kind.MESSAGE, n + 1, b"held", b"[1]"))
                              for n in range(1100)))
        await wait_until(lambda: len(node.peers()) == 1, 5, "the raw peer joined")
        channel = channel_of(node, peer.peer_id)
        await wait_until(lambda: channel.stalled, 5, "the mailbox is full")
        one = length_prefixed(b"\x01" * size)  # (kind byte 1, a REQUEST's: kept)
        chunk = one * (65536 // len(one))
        sent = 0
        with contextlib.suppress(TimeoutError):  # (the node stops reading: writes block)
            async with asyncio.timeout(3):
                while sent < 64 * channel._limit:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
        assert sent < 64 * channel._limit, "the node read on without a bound"
        assert channel._held <= channel._limit + 65536 // len(one) * (len(one) + FRAME_COST)
        writer.close()
    finally:
        app.go.set()
        await node.close()


async def test_a_bad_answer_behind_a_stalled_read_fails_the_connection_after_the_rest(
        ) -> None:
    # The messages before the bad frame are handled (the stopped one was lost, with its
    # coroutine never awaited, when the frames behind it were sorted out first), and the
    # one after it is not.
    app = Echo()
    node = build_node("tcp", [app], listen=["tcp://127.0.0.1:0"])
    await node.start()
    try:
        host, port = node.addresses[0].removeprefix("tcp://").rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(length_prefixed(hello_frame(Identity.generate())))
        await wait_until(lambda: len(node.peers()) == 1, 5, "the raw peer joined")
        writer.write(b"".join(length_prefixed(encode(Kind.MESSAGE, n + 1, b"held", b"[1]"))
                              for n in range(1100)) + length_prefixed(b"\x09\x02")
                     + length_prefixed(encode(Kind.MESSAGE, 1101, b"held", b"[2]")))
        channel = channel_of(node, node.peers()[0].peer_id)
        await wait_until(lambda: channel.stalled, 5, "the mailbox is full")
        await asyncio.sleep(0.2)  # (the bad frame is read meanwhile)
        app.go.set()
        await wait_until(lambda: not node.peers(), 5, "the bad frame closed the connection")
        await wait_until(lambda: len(app.held) == 1100, 10, "every message before it handled")
        await asyncio.sleep(0.2)
        assert app.held == [1] * 1100  # and none after it (as a reader not waiting does)
        writer.close()
    finally:
        await node.close()


class Outbox:
    """A channel's ``try_post`` for a window alone: takes frames while ``open``."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.open = True

    def __call__(self, frame: bytes) -> bool:
        if self.open:
            self.frames.append(frame)
        return self.open


def line(window: RequestWindow, frame: bytes) -> tuple[Any, asyncio.Future[object]]:
    reply: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    return window.line_up(frame, reply, Tally()), reply


async def test_the_window_posts_what_it_lets_in_in_order_and_passes_by_who_gave_up() -> None:
    assert FEW == 4
    outbox = Outbox()
    window = RequestWindow(10, outbox)
    first = [line(window, bytes([n]) * 3) for n in range(4)]  # (the fourth: under FEW)
    assert all(w.sent for w, _ in first) and len(outbox.frames) == 4
    (late, _), (gone, gone_reply), (behind, _) = (
        line(window, b"L" * 12), line(window, b"G"), line(window, b"B" * 3))
    assert (window.in_flight, window.count, window.waiting) == (12, 4, 3)
    assert not (late.sent or late.let_in)
    window.done_with(first[0][0])  # answered: `late` goes (first come, first served)
    assert late.sent and outbox.frames[-1] == b"L" * 12 and late.tally.sent == 1
    assert (window.in_flight, window.count, window.waiting) == (21, 4, 2)
    gone_reply.cancel()  # (its requester gave up in line: cancelled, or timed out)
    window.done_with(gone)
    window.done_with(late)
    assert behind.sent and outbox.frames[-1] == b"B" * 3  # `gone` passed by, never sent
    assert (window.in_flight, window.count, window.waiting) == (12, 4, 0)
    assert not window.waiters


async def test_a_request_let_in_while_the_outbox_is_full_goes_once_there_is_room() -> None:
    outbox = Outbox()
    window = RequestWindow(10, outbox)
    first = [line(window, b"x" * 10) for _ in range(FEW)]
    waiting, _ = line(window, b"w")
    behind, _ = line(window, b"b")
    outbox.open = False
    window.done_with(first[0][0])  # let in, but the outbox is full: at the head, unsent
    assert waiting.let_in and not waiting.sent and window.waiters[0] is waiting
    assert not behind.let_in  # (it waits behind, in order)
    outbox.open = True
    window.room()
    assert waiting.sent and not behind.let_in and outbox.frames[-1] == b"w"
    window.done_with(first[1][0])
    assert behind.sent and outbox.frames[-1] == b"b"
    # One let in that timed out before the outbox had room gives its bytes back.
    outbox.open = False
    late, late_reply = line(window, b"t")
    window.done_with(first[2][0])
    assert late.let_in and not late.sent
    late_reply.set_exception(RequestTimeout("due"))
    window.done_with(late)
    assert not window.waiters and (window.in_flight, window.count) == (12, 3)
    late_reply.exception()
    # The channel ends: what is in line fails with its reason.
    ended, ended_reply = line(window, b"e")
    window.close("connection to p is closed")
    with pytest.raises(ConnectionClosed, match="is closed"):
        await ended_reply
    window.done_with(ended)
    _, after = line(window, b"a")
    with pytest.raises(ConnectionClosed, match="is closed"):
        await after


async def test_a_line_of_requests_that_gave_up_is_swept() -> None:
    # (A window held full by requests the peer never answers, while others time out in
    # line: the line must not grow with every one that gave up.)
    window = RequestWindow(10, Outbox())
    held = [line(window, b"x" * 10)[0] for _ in range(FEW)]
    for _ in range(10_000):
        waiting, reply = line(window, b"y")
        assert not waiting.let_in
        reply.cancel()
        window.done_with(waiting)
    assert len(window.waiters) <= 130
    still, _ = line(window, b"z")
    for waiting in held:
        window.done_with(waiting)
    assert still.sent and (window.in_flight, window.count) == (1, 1)


async def test_the_line_waits_for_requests_made_before_it_that_wait_for_room() -> None:
    # (A request let in at once that found the outbox full waits for room on its own:
    # one let in from the line after it, as the outbox empties, must not pass it.)
    outbox = Outbox()
    window = RequestWindow(10, outbox)
    window.sending = 1  # (as the request path counts itself while it waits)
    later, _ = line(window, b"l")
    assert not later.let_in and window.blocked and outbox.frames == []
    window.room()  # (the writer emptied the outbox: still behind the earlier one)
    assert not later.let_in
    window.sending = 0
    window.room()  # (the request path, once its own request went)
    assert later.sent and outbox.frames == [b"l"] and not window.blocked


async def test_a_request_that_gave_up_in_line_keeps_nothing_and_a_post_that_raises_fails_one(
        ) -> None:
    outbox = Outbox()
    window = RequestWindow(10, outbox)
    first = [line(window, b"x" * 10)[0] for _ in range(FEW)]
    gone, gone_reply = line(window, bytes(1 << 20))
    gone_reply.set_exception(RequestTimeout("due"))
    gone_reply.exception()
    window.done_with(gone)
    # (Its frame, and its reply's error with the traceback that holds the request's
    # locals, are let go at once, not when the line reaches it.)
    assert not hasattr(gone, "frame") and not hasattr(gone, "reply")
    bad, bad_reply = line(window, b"bad")
    good, _ = line(window, b"good")

    def post(frame: bytes) -> bool:
        if frame == b"bad":
            raise OSError("the transport broke")
        return outbox(frame)

    window._post = post
    window.done_with(first[0])  # (answered: its leave() must not raise the other's error)
    with pytest.raises(OSError, match="broke"):
        await bad_reply
    assert not bad.sent and not good.let_in  # (`bad` was let in: FEW in flight)
    window.done_with(bad)  # (its requester learns the error, and gives its bytes back)
    assert good.sent and outbox.frames[-1] == b"good"
    assert (window.in_flight, window.count, window.waiting) == (34, 4, 0)
