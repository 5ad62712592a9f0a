"""The transport conformance kit: frames arrive whole, in order, bounded, and errors are clear.

Describe your transport with a ``transport_case`` fixture and subclass
:class:`TransportConformance` (it also works under ``pytest_plugins``, as every kit)::

    import pytest
    from p2phost_sdk.testing.transport import TransportCase, TransportConformance

    @pytest.fixture
    def transport_case() -> TransportCase:
        return TransportCase(
            make=lambda max_frame_size: MyTransport(max_frame_size=max_frame_size),
            listen_address=lambda: "tcp://127.0.0.1:0",
            unreachable_address="tcp://127.0.0.1:1",
        )

    class TestMyTransport(TransportConformance):
        pass

The ``transport_case`` fixture may be parametrised (several configurations run the whole
kit each). Media that hold inboxes (brokers, databases) set the flags that do not apply to
them: ``propagates_close`` (the other end learns of a close) and ``exclusive_listen`` (a
second listener on the same address is refused). Their transports (``inbox_based``) must
also name the peer on both ends of a connection, and refuse in bounded time to dial a
peer id that nobody uses on the medium (``unknown_peer_address``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from .._errors import ConnectionClosed, FrameTooLarge, TransportError
from .._transport import Connection, DeliveredFrame
from ..inbox import InboxConnection
from ._transport_case import TIMEOUT as _TIMEOUT
from ._transport_case import Sink as _Sink
from ._transport_case import TransportCase, TransportKit, receive
from ._transport_case import close as _close
from ._transport_case import frames as _frames

__all__ = ["TransportCase", "TransportConformance", "TransportKit", "receive"]

class TransportConformance:
    """The conformance tests every transport must pass. Needs a ``transport_case``."""

    pytestmark = [pytest.mark.asyncio]

    @pytest.fixture
    def transport_kit(self, transport_case: TransportCase) -> TransportKit:
        """The kit's helpers over the plugin's ``transport_case``."""
        return TransportKit(transport_case)

    async def test_listener_reports_dialable_addresses(self, transport_kit: TransportKit) -> None:
        transport = transport_kit.case.make(1024)
        seen: asyncio.Queue[Connection] = asyncio.Queue()

        async def accept(connection: Connection) -> None:
            await seen.put(connection)

        listener = await transport.listen(transport_kit.case.listen_address(), accept)
        try:
            assert listener.addresses, "a listener must report at least one address"
            for address in listener.addresses:
                assert address.split("://", 1)[0] in type(transport).schemes, address
                assert not address.endswith(":0"), f"port 0 must be resolved: {address}"
                client = await transport.dial(address, timeout=_TIMEOUT)
                async with asyncio.timeout(_TIMEOUT):
                    server = await seen.get()
                await client.close()
                await server.close()
        finally:
            await listener.close()
            await transport.close()

    async def test_frames_arrive_whole_and_in_order_both_ways(
        self, transport_kit: TransportKit
    ) -> None:
        frames = _frames(300)
        async with transport_kit.pair() as (client, server), asyncio.timeout(_TIMEOUT):
            for sender, receiver in ((client, server), (server, client)):
                sending = asyncio.ensure_future(self._send_all(sender, frames))
                got = [await receive(receiver) for _ in frames]
                await sending
                assert got == frames

    @staticmethod
    async def _send_all(connection: Connection, frames: list[bytes]) -> None:
        for frame in frames:
            await connection.send(frame)

    async def test_send_many_keeps_order(self, transport_kit: TransportKit) -> None:
        frames = _frames(500, seed=11)
        async with transport_kit.pair() as (client, server), asyncio.timeout(_TIMEOUT):
            sending = asyncio.ensure_future(client.send_many(frames))
            got = [await receive(server) for _ in frames]
            await sending
            assert got == frames

    async def test_recv_many_hands_over_whole_frames_in_order(
        self, transport_kit: TransportKit
    ) -> None:
        frames = _frames(500, seed=12)
        async with transport_kit.pair() as (client, server), asyncio.timeout(_TIMEOUT):
            sending = asyncio.ensure_future(client.send_many(frames))
            got: list[bytes] = []
            while len(got) < len(frames):
                batch = await server.recv_many()
                assert batch, "recv_many returned no frame"
                for frame in batch:
                    if isinstance(frame, DeliveredFrame):
                        frame.ack()
                    got.append(bytes(frame))
            await sending
            assert got == frames

    async def test_push_mode_hands_over_frames_in_order_and_honours_pauses(
        self, transport_kit: TransportKit
    ) -> None:
        # Large frames too (a transport may read those in a way of their own).
        frames = _frames(300, seed=13)
        frames[150:150] = [random.Random(5).randbytes(3 << 20), b"after a large one"]
        async with transport_kit.pair() as (client, server), asyncio.timeout(_TIMEOUT):
            sink = _Sink()
            if not server.push(sink):
                pytest.skip("no push mode here: the host reads with recv_many")
            await client.send_many(frames[:100])
            await sink.until(100)
            server.pause_reading()
            paused_at = len(sink.frames)
            sending = asyncio.ensure_future(client.send_many(frames[100:]))
            await asyncio.sleep(0.2)
            assert len(sink.frames) == paused_at, "frames were handed over while paused"
            server.resume_reading()
            await sink.until(len(frames))
            await sending
            assert sink.frames == frames
            if transport_kit.case.propagates_close:
                await client.close()
                assert isinstance(await sink.ended, ConnectionClosed)
                await asyncio.sleep(0.05)
                assert sink.calls_after_end == 0, "the sink was called after the end"

    async def test_push_mode_ends_on_an_oversized_frame_after_the_frames_before_it(
        self, transport_kit: TransportKit
    ) -> None:
        async with transport_kit.pair(server_max=1024, client_max=1 << 20) as (client, server):
            sink = _Sink()
            if not server.push(sink):
                pytest.skip("no push mode here: the host reads with recv_many")
            async with asyncio.timeout(_TIMEOUT):
                await client.send_many([b"first", b"y" * 4096])
                error = await sink.ended
            assert isinstance(error, FrameTooLarge), repr(error)
            assert sink.frames == [b"first"]

    async def test_a_frame_of_the_maximum_size_passes(self, transport_kit: TransportKit) -> None:
        limit = 256 * 1024
        frame = random.Random(3).randbytes(limit)
        async with transport_kit.pair(server_max=limit, client_max=limit) as (client, server):
            async with asyncio.timeout(_TIMEOUT):
                sending = asyncio.ensure_future(client.send(frame))
                assert await receive(server) == frame
                await sending

    async def test_sending_an_oversized_frame_raises(self, transport_kit: TransportKit) -> None:
        limit = 4096
        async with transport_kit.pair(server_max=limit, client_max=limit) as (client, server):
            with pytest.raises(FrameTooLarge):
                await client.send(b"x" * (limit + 1))
            with pytest.raises(FrameTooLarge):
                await client.send_many([b"x" * (limit + 1), b"not sent"])
            # The connection still works after a refused send.
            async with asyncio.timeout(_TIMEOUT):
                await client.send(b"still here")
                assert await receive(server) == b"still here"

    async def test_an_oversized_incoming_frame_is_refused(
        self, transport_kit: TransportKit
    ) -> None:
        async with transport_kit.pair(server_max=1024, client_max=1 << 20) as (client, server):
            async with asyncio.timeout(_TIMEOUT):
                sending = asyncio.ensure_future(client.send(b"y" * 4096))
                with pytest.raises(TransportError):
                    await receive(server)
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)

    async def test_close_is_seen_after_the_frames_sent_before_it(
        self, transport_kit: TransportKit
    ) -> None:
        if not transport_kit.case.propagates_close:
            pytest.skip("this medium does not tell the other end about a close")
        async with transport_kit.pair() as (client, server), asyncio.timeout(_TIMEOUT):
            await client.send(b"last words")
            await client.close()
            await client.close()  # idempotent
            assert await receive(server) == b"last words"
            with pytest.raises(ConnectionClosed):
                await receive(server)

    async def test_send_after_close_raises(self, transport_kit: TransportKit) -> None:
        async with transport_kit.pair() as (client, _server):
            await client.close()
            with pytest.raises(TransportError):
                await client.send(b"too late")

    async def test_dial_nowhere_fails_in_bounded_time(self, transport_kit: TransportKit) -> None:
        case = transport_kit.case
        if case.unreachable_address is None:
            pytest.skip("the case names no unreachable address")
        transport = case.make(1024)
        started = time.monotonic()
        with pytest.raises(TransportError) as failure:
            await transport.dial(case.unreachable_address, timeout=case.dial_within)
        assert time.monotonic() - started < case.dial_within + 1.0
        assert str(failure.value), "the error must say why"
        await transport.close()

    async def test_a_bad_address_is_a_transport_error(self, transport_kit: TransportKit) -> None:
        transport = transport_kit.case.make(1024)

        with pytest.raises(TransportError):
            await transport.dial(transport_kit.case.bad_address, timeout=1.0)
        with pytest.raises(TransportError):
            await transport.listen(transport_kit.case.bad_address, _close)
        await transport.close()

    async def test_listening_twice_on_one_address_is_refused(
        self, transport_kit: TransportKit
    ) -> None:
        if not transport_kit.case.exclusive_listen:
            pytest.skip("this medium allows several listeners on one address")
        transport = transport_kit.case.make(1024)

        listener = await transport.listen(transport_kit.case.listen_address(), _close)
        try:
            with pytest.raises(TransportError):
                second = await transport.listen(listener.addresses[0], _close)
                await second.close()
        finally:
            await listener.close()
            await transport.close()

    async def test_inbox_connections_name_their_peers(self, transport_kit: TransportKit) -> None:
        if not type(transport_kit.case.make(1024)).inbox_based:
            pytest.skip("not an inbox-based transport")
        async with transport_kit.pair() as (client, server):
            assert client.remote_peer_id, "a dialled inbox connection names its peer"
            assert client.remote_address.endswith("#" + client.remote_peer_id)
            assert server.remote_peer_id, "an accepted inbox connection names its peer"
            # pair() makes two transports: two nodes, each naming the other.
            assert server.remote_peer_id != client.remote_peer_id

    async def test_dialling_an_unknown_peer_fails_in_bounded_time(
        self, transport_kit: TransportKit
    ) -> None:
        case = transport_kit.case
        if case.unknown_peer_address is None:
            pytest.skip("the case names no address of an unknown peer")
        transport = case.make(1024)
        started = time.monotonic()
        with pytest.raises(TransportError) as failure:
            await transport.dial(case.unknown_peer_address, timeout=case.dial_within)
        assert time.monotonic() - started < case.dial_within + 1.0
        assert str(failure.value), "the error must say why"
        await transport.close()

    async def test_a_closed_listener_accepts_no_more(self, transport_kit: TransportKit) -> None:
        transport = transport_kit.case.make(1024)

        listener = await transport.listen(transport_kit.case.listen_address(), _close)
        address = listener.addresses[0]
        await listener.close()
        await listener.close()  # idempotent
        with pytest.raises(TransportError):
            connection = await transport.dial(address, timeout=transport_kit.case.dial_within)
            await connection.close()
        await transport.close()

    async def test_a_slow_reader_slows_the_sender_and_loses_nothing(
        self, transport_kit: TransportKit
    ) -> None:
        # The reader takes nothing until the sender is held: on an inbox transport
        # (flow control by credit) exactly at its window, which is then also all its
        # peer's inbox holds; then it reads, and every frame comes, in order. Two windows
        # of frames, sent a quarter window per call: the sender must wait for credit,
        # and no more round trips than that take. A stream is held by its buffers
        # (bytes, the kernel's): the kit cannot tell when, so it checks that nothing is
        # lost to a pause.
        async with transport_kit.pair() as (client, server), asyncio.timeout(_TIMEOUT * 3):
            window = client.window if isinstance(client, InboxConnection) else None
            # A quarter window, so that the sends end exactly at the window.
            chunk = math.gcd(window or 256, max(1, (window or 256) // 4))
            frames = [i.to_bytes(4, "big") * 256 for i in range(2 * (window or 512))]
            sent = [0]  # frames whose send returned, none read yet
            held = asyncio.Event()

            async def send() -> None:
                for start in range(0, len(frames), chunk):
                    await client.send_many(frames[start:start + chunk])
                    sent[0] = start + chunk
                    if window is not None and not held.is_set():
                        assert sent[0] <= window, (
                            f"{sent[0]} frames sent to a reader that took none, over the "
                            f"window of {window}")
                        if sent[0] == window:
                            held.set()

            sending = asyncio.ensure_future(send())
            try:
                if window is not None:
                    waiting = asyncio.ensure_future(held.wait())
                    await asyncio.wait([sending, waiting], return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                    if sending.done():
                        sending.result()  # its overrun of the window, if it failed
                    assert held.is_set(), f"the sender stopped at {sent[0]} frames"
                # A moment more for a sender that ignores the window to overrun it.
                await asyncio.sleep(0.2)
                if window is not None:
                    assert sent[0] == window, f"sent {sent[0]} frames, the window is {window}"
                got = [await receive(server) for _ in frames]
                await sending
            finally:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
            assert got == frames

    async def test_many_connections_at_once(self, transport_kit: TransportKit) -> None:
        transport = transport_kit.case.make(1 << 20)

        async def echo(connection: Connection) -> None:
            try:
                while True:
                    await connection.send(await receive(connection))
            except TransportError:
                await connection.close()

        tasks: set[asyncio.Task[None]] = set()

        async def accept(connection: Connection) -> None:
            task = asyncio.ensure_future(echo(connection))
            tasks.add(task)

        listener = await transport.listen(transport_kit.case.listen_address(), accept)

        async def client(n: int) -> list[bytes]:
            connection = await transport.dial(listener.addresses[0], timeout=_TIMEOUT)
            try:
                sent = [f"{n}:{i}".encode() for i in range(50)]
                await connection.send_many(sent)
                return [await receive(connection) for _ in sent]
            finally:
                await connection.close()

        try:
            async with asyncio.timeout(_TIMEOUT * 2):
                results = await asyncio.gather(*(client(n) for n in range(20)))
            for n, got in enumerate(results):
                assert got == [f"{n}:{i}".encode() for i in range(50)]
        finally:
            await listener.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await transport.close()
