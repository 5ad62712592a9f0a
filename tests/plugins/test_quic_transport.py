"""quic-transport: the transport kit, bounded buffers, and what a listener refuses."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration

from p2phost_sdk import Connection, ConnectionClosed, TransportError
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import OFFICIAL, run_cli
from tests.discovery.plugins import use_plugin_source

use_plugin_source("quic-transport")

from p2phost_quic_transport import PREAMBLE, QuicStreamConnection, QuicTransport  # noqa: E402

TIMEOUT = 10.0


class TestQuicTransport(TransportConformance):
    @pytest.fixture
    def transport_case(self) -> TransportCase:
        return TransportCase(
            make=lambda limit: QuicTransport(max_frame_size=limit),
            listen_address=lambda: "quic://127.0.0.1:0",
            unreachable_address="quic://127.0.0.1:1",
            bad_address="quic://127.0.0.1:notaport",
        )


@asynccontextmanager
async def listening(transport: QuicTransport) -> AsyncIterator[
        tuple[str, asyncio.Queue[Connection]]]:
    """A listener of ``transport`` on loopback: its address and the connections it accepts."""
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def accept(connection: Connection) -> None:
        await accepted.put(connection)

    listener = await transport.listen("quic://127.0.0.1:0", accept)
    try:
        yield listener.addresses[0], accepted
    finally:
        await listener.close()
        await transport.close()


async def settled(count: Callable[[], int], quiet: float = 0.5, within: float = TIMEOUT) -> int:
    """``count()`` once it stopped changing for ``quiet`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last, since = count(), loop.time()
    while loop.time() - since < quiet:
        assert loop.time() < deadline, "the count never settled"
        await asyncio.sleep(0.05)
        if count() != last:
            last, since = count(), loop.time()
    return last


async def test_a_peer_that_does_not_read_holds_the_sender_at_its_window() -> None:
    window, size, total = 128 * 1024, 16 * 1024, 300
    frames = [i.to_bytes(4, "big") * (size // 4) for i in range(total)]
    transport = QuicTransport(window=window)
    async with listening(transport) as (address, accepted):
        client = await transport.dial(address, timeout=TIMEOUT)
        server = await asyncio.wait_for(accepted.get(), TIMEOUT)
        sent = 0

        async def send_all() -> None:
            nonlocal sent
            for frame in frames:
                await client.send(frame)
                sent += 1

        sending = asyncio.ensure_future(send_all())
        held = await settled(lambda: sent)
        # The reader's window, the sender's 256 KiB of unsent bytes, and one frame in hand:
        # the rest (4.6 MiB) waits in the sender's loop, not in anyone's memory.
        assert held * size <= window + 256 * 1024 + 2 * size, held
        async with asyncio.timeout(TIMEOUT * 3):
            got = [await server.recv() for _ in frames]
            await sending
        assert got == frames
        await client.close()
        await server.close()


async def _raw_client(address: str, alpn: str = "p2phost") -> AsyncIterator[Any]:
    host, port = address.removeprefix("quic://").rsplit(":", 1)
    configuration = QuicConfiguration(is_client=True, alpn_protocols=[alpn],
                                      verify_mode=ssl.CERT_NONE)
    async with connect(host, int(port), configuration=configuration) as client:
        yield client


async def test_a_peer_that_never_opens_its_stream_is_dropped() -> None:
    async with listening(QuicTransport(handshake_timeout=0.5)) as (address, accepted):
        async with asynccontextmanager(_raw_client)(address) as client:
            async with asyncio.timeout(TIMEOUT):
                await client.wait_closed()
        assert accepted.empty()


async def test_a_peer_with_a_wrong_preamble_or_protocol_is_refused() -> None:
    async with listening(QuicTransport()) as (address, accepted):
        async with asynccontextmanager(_raw_client)(address) as client:
            stream = client._quic.get_next_available_stream_id()
            client._quic.send_stream_data(stream, b"GET / HTTP/1.1\r\n\r\n")
            client.transmit()
            async with asyncio.timeout(TIMEOUT):
                await client.wait_closed()
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(TIMEOUT), asynccontextmanager(_raw_client)(address, "h3"):
                pass
        assert accepted.empty()


async def test_a_second_stream_ends_the_connection() -> None:
    async with listening(QuicTransport()) as (address, accepted):
        async with asynccontextmanager(_raw_client)(address) as client:
            quic = client._quic
            quic.send_stream_data(quic.get_next_available_stream_id(), PREAMBLE)
            client.transmit()
            server = await asyncio.wait_for(accepted.get(), TIMEOUT)
            quic.send_stream_data(quic.get_next_available_stream_id(), b"\0\0\0\1x")
            client.transmit()
            with pytest.raises(TransportError, match="stream 4"):
                async with asyncio.timeout(TIMEOUT):
                    await server.recv()
            await server.close()
            with pytest.raises(ConnectionClosed):
                await server.recv()


def test_plugin_check_runs_the_transport_kit() -> None:
    result = run_cli("plugin", "check", str(OFFICIAL / "quic-transport"), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ transport conformance kit: 15 passed" in result.stdout, result.stdout


@pytest.mark.parametrize("listen", ["quic://0.0.0.0:0", "quic://[::1]:0"])
async def test_wildcard_and_ipv6_addresses_are_dialable(listen: str) -> None:
    transport = QuicTransport()
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def accept(connection: Connection) -> None:
        await accepted.put(connection)

    try:
        listener = await transport.listen(listen, accept)
    except TransportError as exc:
        pytest.skip(f"no such address here: {exc}")
    try:
        async with asyncio.timeout(TIMEOUT):
            client = await transport.dial(listener.addresses[0], timeout=TIMEOUT)
            server = await accepted.get()
            await client.send(b"hello")
            assert await server.recv() == b"hello"
            await server.send(b"back")
            assert await client.recv() == b"back"
        await client.close()
        await server.close()
    finally:
        await listener.close()
        await transport.close()


async def test_handshakes_in_progress_are_capped_per_listener() -> None:
    transport = QuicTransport(max_pending=2, handshake_timeout=1.0)
    async with listening(transport) as (address, accepted), contextlib.AsyncExitStack() as stack:
        # Two peers finish QUIC's handshake and then sit there, never opening their stream.
        idle = [await stack.enter_async_context(asynccontextmanager(_raw_client)(address))
                for _ in range(2)]
        # A third is not even answered while they hold the listener's two slots...
        with pytest.raises(TransportError, match="no answer within"):
            await transport.dial(address, timeout=0.5)
        # ...until the handshake timeout drops them; then a real dialler gets through.
        async with asyncio.timeout(TIMEOUT):
            for client in idle:
                await client.wait_closed()
            dialled = await transport.dial(address, timeout=TIMEOUT)
            assert await accepted.get()
        await dialled.close()


async def test_an_end_that_never_wrote_a_frame_closes_at_once_when_the_peer_is_gone() -> None:
    # A refused handshake closes before writing anything: no wait for a vanished peer's
    # acknowledgement, so the node's report of the refusal is not held back.
    async with listening(QuicTransport()) as (address, accepted):
        client = await QuicTransport().dial(address, timeout=TIMEOUT)
        await client.send(b"a first handshake message the server refuses")
        server = await asyncio.wait_for(accepted.get(), TIMEOUT)
        assert await asyncio.wait_for(server.recv(), TIMEOUT)
        assert client.udp is not None
        client.udp.close()  # the peer vanishes without a word (its process was killed)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.close()
        assert loop.time() - started < 1.0


async def test_a_frame_over_the_hosts_cap_gets_no_credit_and_is_refused_when_taken() -> None:
    # Before its handshake the host caps frames small (Connection.limit_incoming): a peer
    # that announces 16 MiB gets no flow-control credit past its window for it, and
    # the connection ends with a reason once the host asks for the frame.
    window = 128 * 1024
    transport = QuicTransport(window=window)
    async with listening(transport) as (address, accepted):
        client = await transport.dial(address, timeout=TIMEOUT)
        server = await asyncio.wait_for(accepted.get(), TIMEOUT)
        server.limit_incoming(65536)
        sending = asyncio.ensure_future(client.send(bytes(16 * 1024 * 1024)))
        with pytest.raises(TransportError, match="16777216 bytes, over the maximum of 65536"):
            await asyncio.wait_for(server.recv(), TIMEOUT)
        assert server.quic._streams[0].receiver.highest_offset <= window + len(PREAMBLE)
        with pytest.raises(ConnectionClosed, match="over the maximum of 65536"):
            await asyncio.wait_for(sending, TIMEOUT)
        await client.close()
        await server.close()


async def test_a_large_frame_right_behind_the_hello_waits_for_the_cap_to_be_lifted() -> None:
    # A peer may send a large message as soon as it has this node's hello: it must not
    # be refused by the cap the handshake still has on when it arrives, only if the
    # host asks for it with the cap still on.
    big = bytes(range(256)) * 800
    for lifted in (True, False):
        transport = QuicTransport()
        async with listening(transport) as (address, accepted):
            client = await transport.dial(address, timeout=TIMEOUT)
            server = await asyncio.wait_for(accepted.get(), TIMEOUT)
            server.limit_incoming(65536)
            await client.send_many([b"hello", big])
            assert await asyncio.wait_for(server.recv(), TIMEOUT) == b"hello"
            await asyncio.sleep(0.2)  # all of it here, behind the cap
            if lifted:
                server.limit_incoming(None)
                assert await asyncio.wait_for(server.recv(), TIMEOUT) == big
            else:
                with pytest.raises(TransportError, match="over the maximum of 65536"):
                    await asyncio.wait_for(server.recv(), TIMEOUT)
            await client.close()
            await server.close()


async def test_a_large_frame_held_whole_behind_queued_frames_is_taken_once_the_cap_lifts() -> None:
    # The cap is lifted while a small frame is still queued, the large one (under the
    # window) already here whole behind it: no more bytes will come to split it out, so
    # lifting the cap must (it waited for the peer's next bytes: a keepalive at best).
    big = bytes(range(256)) * 800
    transport = QuicTransport()
    async with listening(transport) as (address, accepted):
        client = await transport.dial(address, timeout=TIMEOUT)
        server = await asyncio.wait_for(accepted.get(), TIMEOUT)
        server.limit_incoming(65536)
        await client.send_many([b"hello", b"ping", big])
        assert await asyncio.wait_for(server.recv(), TIMEOUT) == b"hello"
        await asyncio.sleep(0.2)  # all of it here: "ping" queued, the large one behind the cap
        server.limit_incoming(None)
        assert await asyncio.wait_for(server.recv(), TIMEOUT) == b"ping"
        assert await asyncio.wait_for(server.recv(), TIMEOUT) == big
        await client.close()
        await server.close()


async def test_before_the_cap_is_lifted_a_peer_gets_little_credit_then_the_window_opens() -> None:
    # Before its handshake a peer can make the node hold hardly more than the handshake's
    # cap (64 KiB, as on tcp), not a whole window (1 MiB). Once the node reads, with a
    # cap still on (Noise's messages after its handshake), the window opens as it reads.
    transport = QuicTransport()
    async with listening(transport) as (address, accepted):
        client = await transport.dial(address, timeout=TIMEOUT)
        server = await asyncio.wait_for(accepted.get(), TIMEOUT)
        assert isinstance(server, QuicStreamConnection)
        server.limit_incoming(65536)
        frames = [bytes([i]) * 60_000 for i in range(100)]
        sending = asyncio.ensure_future(client.send_many(frames))
        held = await settled(lambda: server.quic._streams[0].receiver.highest_offset)
        assert held <= len(PREAMBLE) + 4 + 64 * 1024
        server.limit_incoming(65535)
        async with asyncio.timeout(TIMEOUT):
            for frame in frames:
                assert await server.recv() == frame
            await sending
        assert server.quic._streams[0].max_stream_data_local >= transport.window
        await client.close()
        await server.close()
