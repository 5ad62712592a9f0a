"""tcp-transport's large frames: written without a joined copy, read into one buffer
(on asyncio's loop straight from the socket), whole and in order between small ones;
a large frame cut short by a close is a truncated frame, not a clean end; a run of
small frames written at once (``try_send_many``) never overtakes one."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from p2phost_sdk import Connection, ConnectionClosed, TransportError
from tests.discovery.plugins import use_plugin_source

use_plugin_source("tcp-transport")

from p2phost_tcp_transport import TcpTransport  # noqa: E402

BIG = bytes(range(256)) * 20_000  # 5 MB


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    (uvloop.run if loop == "uvloop" else asyncio.run)(asyncio.wait_for(main(), 30))


class Sink:
    """A push-mode sink that keeps what it is handed."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended: list[Exception] = []

    def frames_received(self, frames: list[bytes]) -> None:
        self.frames += [bytes(f) for f in frames]

    def connection_ended(self, error: Exception) -> None:
        self.ended.append(error)


async def pair() -> tuple[Connection, Connection]:
    transport = TcpTransport(max_frame_size=8 << 20)
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    listener = await transport.listen("tcp://127.0.0.1:0", accepted.put)
    dialled = await transport.dial(listener.addresses[0], timeout=5)
    return dialled, await accepted.get()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_frames_arrive_whole_and_in_order_between_small_ones(loop: str) -> None:
    async def main() -> None:
        sender, receiver = await pair()
        sent = [b"small", BIG, b"tail", memoryview(BIG)[1:], b"x" * 70_000]
        async def receive(count: int) -> list[bytes]:
            got: list[bytes] = []
            while len(got) < count:
                got += await receiver.recv_many()
            return got

        for _ in range(3):
            receiving = asyncio.ensure_future(receive(len(sent) + 1))
            await sender.send_many(sent)  # type: ignore[arg-type]
            await sender.send(BIG[:100_000])
            got = await receiving
            assert [bytes(f) for f in got] == [bytes(f) for f in sent] + [BIG[:100_000]]
        await sender.close()
        await receiver.close()

    run(loop, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_large_frame_cut_short_is_a_truncated_frame(loop: str) -> None:
    async def main() -> None:
        transport = TcpTransport(max_frame_size=8 << 20)
        accepted: asyncio.Queue[Connection] = asyncio.Queue()
        listener = await transport.listen("tcp://127.0.0.1:0", accepted.put)
        host, port = listener.addresses[0][len("tcp://"):].rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        receiver = await accepted.get()
        writer.write(struct.pack("!I", len(BIG)) + BIG[:3_000_000])
        await writer.drain()
        reading = asyncio.ensure_future(receiver.recv())
        await asyncio.sleep(0.2)  # the rest of the frame is now read straight into place
        writer.close()
        with pytest.raises(TransportError, match="truncated frame: 3000000 of 5120000"):
            await reading
        await receiver.close()
        await listener.close()

    run(loop, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_frames_a_slow_reader_takes_late_arrive_whole_and_after_what_went_before(
        loop: str) -> None:
    # The socket takes part of each large frame (the peer does not read yet): the rest
    # is written as the peer takes it, and nothing written meanwhile overtakes it.
    async def main() -> None:
        sender, receiver = await pair()
        frames = [bytes([n]) * 3_000_000 for n in range(4)]
        writing = asyncio.ensure_future(asyncio.gather(
            *(sender.send(f) for f in frames), sender.send(b"after")))
        await asyncio.sleep(0.2)
        assert not sender.try_send(b"overtaking")  # a large frame is being written
        got: list[bytes] = []
        while len(got) < len(frames) + 1:
            got += [bytes(f) for f in await receiver.recv_many()]
        await writing
        assert got == [*frames, b"after"]
        await sender.close()
        await receiver.close()

    run(loop, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_run_of_small_frames_goes_at_once_only_when_nothing_waits_to_be_written(
        loop: str) -> None:
    async def main() -> None:
        sender, receiver = await pair()
        run_ = [b"one", b"two" * 100, b"three"]
        assert sender.try_send_many(run_)
        assert not sender.try_send_many([b"x" * 40_000, b"y" * 40_000])  # large in all:
        # send_many writes those from their own buffers (and says a size it refuses)
        assert not sender.try_send_many([b"z" * ((8 << 20) + 1)])
        got: list[bytes] = []
        while len(got) < len(run_):
            got += [bytes(f) for f in await receiver.recv_many()]
        assert got == run_
        # A slow reader: a large frame's rest waits for the socket, and no run of small
        # frames goes before it.
        frames = [bytes([n]) * 3_000_000 for n in range(4)]  # (more than the kernel takes)
        writing = asyncio.ensure_future(sender.send_many([*frames, b"after"]))
        await asyncio.sleep(0.2)
        assert not sender.try_send_many([b"overtaking"])
        got = []
        while len(got) < len(frames) + 1:
            got += [bytes(f) for f in await receiver.recv_many()]
        await writing
        assert got == [*frames, b"after"]
        await sender.close()
        assert not sender.try_send_many([b"closed"])
        await receiver.close()

    run(loop, main)


def test_a_large_write_cancelled_midway_still_goes_whole_before_the_next() -> None:
    async def main() -> None:
        sender, receiver = await pair()
        big = bytes(range(256)) * 30_000  # 7.68 MB: more than the socket takes at once
        writing = asyncio.ensure_future(sender.send(big))
        await asyncio.sleep(0.05)
        writing.cancel()

        async def receive() -> list[bytes]:
            got: list[bytes] = []
            while len(got) < 2:
                got += [bytes(f) for f in await receiver.recv_many()]
            return got

        receiving = asyncio.ensure_future(receive())
        await sender.send(b"next")
        assert await receiving == [big, b"next"]
        await sender.close()
        await receiver.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_large_write_to_a_peer_that_goes_away_fails_instead_of_hanging() -> None:
    async def main() -> None:
        sender, receiver = await pair()
        writing = asyncio.ensure_future(sender.send(BIG))
        await asyncio.sleep(0.1)
        await receiver.close()  # unread data: the sender's socket is reset
        with pytest.raises(ConnectionClosed):
            await writing
            await sender.send(BIG)  # (the first write may have fitted the socket)
        await sender.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_frame_still_held_is_not_reused_for_the_next_one() -> None:
    async def main() -> None:
        sender, receiver = await pair()
        first, second = b"a" * 200_000, b"b" * 200_000
        await sender.send(first)
        held = await receiver.recv()
        view = memoryview(held)[10:]
        del held
        for _ in range(6):  # more frames of that size than the pool keeps
            await sender.send(second)
            assert bytes(await receiver.recv()) == second
        assert bytes(view) == first[10:]  # the view kept its frame's bytes
        await sender.close()
        await receiver.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_frame_buffers_are_reused_once_nothing_holds_them() -> None:
    from p2phost_tcp_transport._direct import frame_buffer

    first = frame_buffer(100_000)
    view = memoryview(first)[5:]
    second = frame_buffer(100_000)
    assert second is not first  # a view of it is alive
    view.release()
    third = frame_buffer(100_000)
    assert third is not first and third is not second  # names hold them
    held = {id(first), id(second), id(third)}
    del first, second, third, view
    assert id(frame_buffer(100_000)) in held
    assert len(frame_buffer(100_001)) == 100_001


def test_a_close_lets_a_large_frame_being_written_finish() -> None:
    async def main() -> None:
        sender, receiver = await pair()
        big = bytes(range(256)) * 30_000
        writing = asyncio.ensure_future(sender.send(big))
        await asyncio.sleep(0.05)
        writing.cancel()  # as the node's writer is when the connection closes
        receiving = asyncio.ensure_future(receiver.recv())
        await sender.close()
        assert bytes(await receiving) == big
        await receiver.close()

    asyncio.run(asyncio.wait_for(main(), 30))


async def test_a_sink_that_raises_in_push_mode_leaves_close_quiet() -> None:
    # What a sink raises in the protocol's callback reaches asyncio's handler, which
    # closes the transport with it; close() then still just closes (the stream's
    # wait_closed re-raises that error).
    class Raising:
        ended: list[Exception] = []

        def frames_received(self, frames: list[bytes]) -> None:
            raise RuntimeError("a bug in the sink")

        def connection_ended(self, error: Exception) -> None:
            self.ended.append(error)

    a, b = await pair()
    sink = Raising()
    assert b.push(sink)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: None)  # asyncio's log of it
    try:
        await a.send(b"frame")
        for _ in range(100):
            if sink.ended:
                break
            await asyncio.sleep(0.02)
        assert sink.ended, "the connection did not end"
        await asyncio.wait_for(b.close(), 5)
    finally:
        loop.set_exception_handler(None)
        await a.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_large_frame_right_behind_the_hello_waits_for_the_handshake_to_lift_its_cap(
    loop: str,
) -> None:
    # A peer may send a large message as soon as it has our hello: in one read with
    # its own hello, it must not be refused by the cap the handshake still has on.
    async def main() -> None:
        for lifted in (True, False):
            sender, receiver = await pair()
            receiver.limit_incoming(65536)
            await sender.send_many([b"hello", BIG[:200_000]])
            await asyncio.sleep(0.05)  # both in the receiver's socket: one read
            assert await receiver.recv() == b"hello"
            if lifted:
                receiver.limit_incoming(None)
                assert bytes(await receiver.recv()) == BIG[:200_000]
            else:  # the handshake asks for it: still over its cap
                with pytest.raises(TransportError, match="before the handshake is done"):
                    await receiver.recv()
            await sender.close()
            await receiver.close()

    run(loop, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_push_mode_takes_frames_whose_bytes_straddle_reads_anywhere(loop: str) -> None:
    # A frame's length or body cut anywhere between reads, large frames among small
    # ones: push mode joins only what completes the frame and splits the rest in place.

    async def main() -> None:
        transport = TcpTransport(max_frame_size=8 << 20)
        accepted: asyncio.Queue[Connection] = asyncio.Queue()
        listener = await transport.listen("tcp://127.0.0.1:0", accepted.put)
        host, port = listener.addresses[0].removeprefix("tcp://").rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        receiver = await accepted.get()
        sink = Sink()
        assert receiver.push(sink)  # type: ignore[arg-type]
        sizes = [0, 1, 3, 4, 5, 1000, 1024, 3, 70_000, 2, 65_535, 7] * 3
        frames = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
        stream = b"".join(struct.pack("!I", len(f)) + f for f in frames)
        cuts = itertools.cycle([1, 2, 3, 5, 1001, 4096, 100_000, 6])
        at = 0
        while at < len(stream):
            step = next(cuts)
            writer.write(stream[at : at + step])
            await writer.drain()
            await asyncio.sleep(0.002)  # most cuts then fall between reads
            at += step
        for _ in range(500):
            if len(sink.frames) >= len(frames):
                break
            await asyncio.sleep(0.01)
        assert sink.frames == frames and not sink.ended
        writer.close()
        await receiver.close()
        await listener.close()

    run(loop, main)


def test_push_mode_on_asyncio_reads_small_frames_plainly_and_large_ones_in_place() -> None:
    # asyncio's loop: a push-mode connection's small reads come through data_received
    # (no scratch buffer, no copy out of it per read), while the rest of a large frame is
    # read straight into its buffer; the small frames behind it come plainly again.
    sink = Sink()
    got = sink.frames

    async def main() -> None:
        sender, receiver = await pair()
        direct = receiver._direct  # type: ignore[attr-defined]
        into_scratch, into_frame = 0, 0
        updated = direct.buffer_updated

        def counting(nbytes: int) -> None:
            nonlocal into_scratch, into_frame
            if direct._target is None:
                into_scratch += 1
            else:
                into_frame += 1
            updated(nbytes)

        direct.buffer_updated = counting
        assert receiver.push(sink)  # type: ignore[arg-type]
        sent = [b"small", BIG, b"tail", b"x" * 1000]
        for frame in sent:
            await sender.send(frame)
            await asyncio.sleep(0.01)
        for _ in range(500):
            if len(got) >= len(sent):
                break
            await asyncio.sleep(0.01)
        assert got == sent
        assert into_frame > 0 and into_scratch == 0
        await sender.close()
        await receiver.close()

    run("asyncio", main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_push_mode_hands_reads_to_the_connection_with_no_protocol_step_between(
        loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each read of a push-mode connection goes from the loop's transport straight to the
    # connection's callback (uvloop keeps the method it found when the protocol was set).
    from p2phost_tcp_transport._direct import DirectProtocol

    through_protocol = 0
    original = DirectProtocol.data_received

    def counting(self: DirectProtocol, data: bytes) -> None:
        nonlocal through_protocol
        through_protocol += 1
        original(self, data)

    monkeypatch.setattr(DirectProtocol, "data_received", counting)
    sink = Sink()
    got = sink.frames

    async def main() -> None:
        nonlocal through_protocol
        sender, receiver = await pair()
        assert receiver.push(sink)  # type: ignore[arg-type]
        through_protocol = 0
        sent = [b"one", b"two" * 100, b"three"]
        for frame in sent:
            await sender.send(frame)
            await asyncio.sleep(0.01)
        for _ in range(500):
            if len(got) >= len(sent):
                break
            await asyncio.sleep(0.01)
        assert got == sent and through_protocol == 0
        await sender.close()
        await receiver.close()

    run(loop, main)
