"""websocket-transport: the transport kit, and what a WebSocket endpoint refuses."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct

import httpx
import pytest

from p2phost_sdk import AddressError, Connection, FrameTooLarge, TransportError
from p2phost_sdk.testing.discovery import wait_until
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
from tests.conftest import OFFICIAL, run_cli
from tests.discovery.plugins import use_plugin_source

use_plugin_source("websocket-transport")

from p2phost_websocket_transport import WebSocketTransport  # noqa: E402


def _case(path: str) -> TransportCase:
    return TransportCase(
        make=lambda limit: WebSocketTransport(max_frame_size=limit, proxy=""),
        listen_address=lambda: f"ws://127.0.0.1:0{path}",
        unreachable_address="ws://127.0.0.1:1",
        bad_address="ws://127.0.0.1:notaport",
    )


class TestWebSocketTransport(TransportConformance):
    @pytest.fixture(params=["", "/p2p/node"])
    def transport_case(self, request: pytest.FixtureRequest) -> TransportCase:
        return _case(request.param)


async def _listening(transport: WebSocketTransport, address: str) -> tuple[
        str, asyncio.Queue[Connection]]:
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def accept(connection: Connection) -> None:
        await accepted.put(connection)

    listener = await transport.listen(address, accept)
    return listener.addresses[0], accepted


async def test_a_wrong_path_is_refused_with_a_clear_error() -> None:
    transport = WebSocketTransport(proxy="")
    address, _ = await _listening(transport, "ws://127.0.0.1:0/mine")
    with pytest.raises(TransportError, match="answered 404"):
        await transport.dial(address.replace("/mine", "/other"), timeout=5)
    await transport.close()


async def test_plain_http_and_browser_pages_are_refused() -> None:
    transport = WebSocketTransport(proxy="")
    address, accepted = await _listening(transport, "ws://127.0.0.1:0")
    url = address.replace("ws://", "http://")
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    async with httpx.AsyncClient(trust_env=False) as client:
        # A WebSocket client that does not ask for the p2phost subprotocol.
        plain = await client.get(url, headers=upgrade)
        assert plain.status_code == 400 and "p2phost" in plain.text
        # A page in a browser (it sends its Origin) may not make the node a peer of it.
        page = await client.get(url, headers={**upgrade, "Sec-WebSocket-Protocol": "p2phost",
                                             "Origin": "https://evil.example"})
        assert page.status_code == 403
    assert accepted.empty()
    await transport.close()


async def test_an_allowed_origin_may_connect() -> None:
    transport = WebSocketTransport(proxy="", origins=["https://app.example"])
    address, accepted = await _listening(transport, "ws://127.0.0.1:0")
    url = address.replace("ws://", "http://")
    async with httpx.AsyncClient(trust_env=False) as client:
        page = await client.get(url, headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "p2phost",
            "Origin": "https://app.example"})
        assert page.status_code == 101
    async with asyncio.timeout(5):
        await (await accepted.get()).close()
    await transport.close()


async def test_a_dial_goes_through_an_http_proxy() -> None:
    """The network lets only an HTTP proxy out: the node dials through it (CONNECT)."""
    requests: list[bytes] = []
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        requests.append(head.split(b"\r\n", 1)[0])
        host, port = head.split()[1].decode().rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for task in (pipe(reader, upstream_writer), pipe(upstream_reader, writer)):
            pipes.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    transport = WebSocketTransport(proxy=proxy_url)
    try:
        address, accepted = await _listening(transport, "ws://127.0.0.1:0/p2p")
        async with asyncio.timeout(10):
            client = await transport.dial(address, timeout=5)
            server_end = await accepted.get()
            await client.send(b"through the proxy")
            assert await server_end.recv() == b"through the proxy"
        port = address.rsplit(":", 1)[1].split("/")[0]
        assert requests == [f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()]
        await client.close()
        await server_end.close()
    finally:
        await transport.close()
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


def test_plugin_check_runs_the_transport_kit() -> None:
    result = run_cli("plugin", "check", str(OFFICIAL / "websocket-transport"), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ transport conformance kit: 15 passed" in result.stdout, result.stdout


async def _upgraded(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket client's socket to ``address``, upgraded."""
    host, rest = address.removeprefix("ws://").split(":", 1)
    port, _, path = rest.partition("/")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: p2phost\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def binary_header(size: int) -> bytes:
    """A client's binary message header announcing ``size`` bytes (a zero mask key: the
    payload goes as it is)."""
    return struct.pack("!BBQ", 0x82, 0x80 | 127, size) + bytes(4)


async def close_code(reader: asyncio.StreamReader) -> int:
    """The code of the close frame the server sends."""
    async with asyncio.timeout(10):
        head = await reader.readexactly(2)
        assert head[0] == 0x88, head  # a close frame, nothing before it
        payload = await reader.readexactly(head[1] & 0x7F)
        return int(struct.unpack_from("!H", payload)[0])


async def test_a_large_message_right_behind_the_hello_waits_for_the_cap_to_be_lifted() -> None:
    # A peer may send a large message as soon as it has this node's hello: it must not
    # be refused by the cap the handshake still has on when it arrives, only if the
    # host asks for it with the cap still on; meanwhile the socket is not read.
    big = bytes(range(256)) * 4096  # 1 MiB
    for lifted in (True, False):
        transport = WebSocketTransport(proxy="")
        address, accepted = await _listening(transport, "ws://127.0.0.1:0")
        client = await transport.dial(address, timeout=5)
        server = await asyncio.wait_for(accepted.get(), 5)
        server.limit_incoming(65536)
        await client.send_many([b"hello", big])
        assert await asyncio.wait_for(server.recv(), 5) == b"hello"
        await asyncio.sleep(0.2)  # what the socket gives before reading stops
        websocket = server._ws  # type: ignore[attr-defined]
        assert len(websocket.protocol.reader.buffer) < len(big)
        if lifted:
            server.limit_incoming(None)
            assert await asyncio.wait_for(server.recv(), 5) == big
        else:
            with pytest.raises(FrameTooLarge, match="over the maximum of 65536 bytes"):
                await asyncio.wait_for(server.recv(), 5)
        await client.close()
        await server.close()
        await transport.close()


async def test_websockets_logs_nothing_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    # One client must not fill the node's log: websockets' "connection open" and
    # "connection closed" (INFO) stay out of it.
    caplog.set_level(logging.INFO)
    transport = WebSocketTransport(proxy="")
    address, accepted = await _listening(transport, "ws://127.0.0.1:0")
    for _ in range(3):
        client = await transport.dial(address, timeout=5)
        server = await asyncio.wait_for(accepted.get(), 5)
        await client.close()
        await server.close()
    await transport.close()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("p2phost")] == []


def fragment(opcode: int, size: int, *, fin: bool) -> bytes:
    """A client's frame of ``size`` zero bytes (a zero mask key), ``fin`` or not."""
    return struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, size) + bytes(4 + size)


async def _capped(transport: WebSocketTransport) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, Connection]:
    """A raw client's socket to a new listener of ``transport``, and the accepted
    connection, capped as before the host's handshake."""
    address, accepted = await _listening(transport, "ws://127.0.0.1:0/p2p")
    reader, writer = await _upgraded(address)
    server = await asyncio.wait_for(accepted.get(), 5)
    server.limit_incoming(65536)
    return reader, writer, server


@pytest.mark.parametrize("sent", [
    # A message announced at 16 MiB: refused once what came of it passes the cap.
    binary_header(16 * 1024 * 1024) + bytes(256 * 1024),
    # 8 MiB in 1 KiB fragments, each arriving whole so that no read waits for more of
    # it: the cap counts them still (they were read on to max_size behind it).
    fragment(0x2, 1024, fin=False) + fragment(0x0, 1024, fin=False) * (8 * 1024 - 1),
], ids=["announced", "fragments"])
async def test_a_message_over_the_hosts_cap_is_refused_before_it_is_buffered(
        sent: bytes) -> None:
    # Before its handshake the host caps frames small (Connection.limit_incoming): a
    # message over it is refused (1009), not after websockets buffered all of it.
    transport = WebSocketTransport(proxy="")
    reader, writer, server = await _capped(transport)
    receiving = asyncio.ensure_future(server.recv())
    writer.write(sent)
    assert await close_code(reader) == 1009
    with pytest.raises(FrameTooLarge, match="over the maximum of 65536 bytes"):
        await asyncio.wait_for(receiving, 5)
    assert server.partly_received() < 65536 + 256 * 1024  # what it buffered of it
    writer.close()
    await transport.close()


async def test_a_fragmented_message_behind_the_hello_waits_for_the_cap_to_be_lifted() -> None:
    # As a whole message does: fragments read with the cap on, the node not asking,
    # wait for it (reading stops), and are taken once the cap is lifted.
    transport = WebSocketTransport(proxy="")
    _reader, writer, server = await _capped(transport)
    writer.write(fragment(0x2, 5, fin=True) + fragment(0x2, 1024, fin=False)
                 + fragment(0x0, 1024, fin=False) * 254 + fragment(0x0, 1024, fin=True))
    assert await asyncio.wait_for(server.recv(), 5) == bytes(5)
    await asyncio.sleep(0.2)
    server.limit_incoming(None)
    assert await asyncio.wait_for(server.recv(), 5) == bytes(256 * 1024)
    writer.close()
    await transport.close()


async def test_a_message_at_the_cap_ended_by_an_empty_fragment_is_taken() -> None:
    # websockets sends a message given in pieces as fragments and an empty last one:
    # its header, read after the cap's worth of payload, is not payload over the cap.
    transport = WebSocketTransport(proxy="")
    _reader, writer, server = await _capped(transport)
    receiving = asyncio.ensure_future(server.recv())
    writer.write(fragment(0x2, 1024, fin=False) + fragment(0x0, 1024, fin=False) * 63
                 + fragment(0x0, 0, fin=True))
    assert await asyncio.wait_for(receiving, 5) == bytes(65536)
    writer.close()
    await transport.close()


async def test_what_arrived_of_a_message_is_partly_received() -> None:
    # The keepalive asks it of a silent connection: a large message still arriving,
    # whole or in fragments, is traffic (tests/hostile/test_slow_peers.py end to end).
    transport = WebSocketTransport(proxy="")
    _reader, writer, server = await _capped(transport)
    server.limit_incoming(None)
    assert server.partly_received() == 0
    writer.write(binary_header(1024 * 1024) + bytes(300 * 1024))
    await wait_until(lambda: server.partly_received() == 300 * 1024, 5, "300 KiB of one frame")
    writer.write(bytes(724 * 1024))
    assert await asyncio.wait_for(server.recv(), 5) == bytes(1024 * 1024)
    assert server.partly_received() == 0
    writer.write(fragment(0x2, 1024, fin=False) + fragment(0x0, 1024, fin=False)
                 + fragment(0x0, 1024, fin=True)[:1000])
    # Two fragments parsed, and the payload of the third less its 8-byte header.
    await wait_until(lambda: server.partly_received() == 2048 + 992, 5, "fragments")
    writer.write(fragment(0x0, 1024, fin=True)[1000:])
    assert await asyncio.wait_for(server.recv(), 5) == bytes(3072)
    assert server.partly_received() == 0
    writer.close()
    await transport.close()


@pytest.mark.parametrize(("address", "problem"), [
    # As tcp says it (the SDK's parse_host_port), not "the port is not 0-65535".
    ("ws://::1:7480", "an IPv6 host goes in brackets: ws://[::1]:7480"),
    ("ws://fe80::1/p2p", "an IPv6 host goes in brackets: ws://[fe80::1]:PORT"),
    ("ws://127.0.0.1:99999", "the port is not 0-65535"),
    ("ws://127.0.0.1", "expected ws://HOST:PORT or ws://HOST:PORT/PATH"),
    ("ws://[::1", "Invalid IPv6 URL (expected ws://HOST:PORT or ws://HOST:PORT/PATH"),
    ("tcp://127.0.0.1:7480", "expected ws://HOST:PORT or ws://HOST:PORT/PATH"),
    ("ws://127.0.0.1:7480/p?q", "(no query, fragment or user)"),
    ("ws://me@127.0.0.1:7480", "(no query, fragment or user)"),
])
def test_a_malformed_address_says_what_is_wrong(address: str, problem: str) -> None:
    with pytest.raises(AddressError) as caught:
        WebSocketTransport().check_address(address)
    assert caught.value.address == address and problem in caught.value.problem
    assert caught.value.expected == "ws://HOST:PORT or ws://HOST:PORT/PATH, e.g. " \
        "ws://127.0.0.1:7480"


async def test_an_ipv6_address_with_a_path_is_listened_on_and_dialled() -> None:
    transport = WebSocketTransport(proxy="")
    try:
        address, accepted = await _listening(transport, "ws://[::1]:0/p2p")
    except TransportError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert address.startswith("ws://[::1]:") and address.endswith("/p2p"), address
    try:
        async with asyncio.timeout(10):
            client = await transport.dial(address, timeout=5)
            server_end = await accepted.get()
            await client.send(b"over IPv6")
            assert await server_end.recv() == b"over IPv6"
            assert server_end.remote_address.startswith("ws://[::1]:")
        await client.close()
        await server_end.close()
    finally:
        await transport.close()


async def test_once_the_cap_is_lifted_frames_are_read_by_websockets_alone() -> None:
    # The cap's check wraps every read of the frame parser; after the host's handshake
    # (the cap lifted) each frame pays no generator of ours, and a new cap wraps again.
    transport = WebSocketTransport(proxy="")
    _reader, writer, server = await _capped(transport)
    stream = server._ws.protocol.reader  # type: ignore[attr-defined]
    assert stream.read_exact.__func__ is not type(stream).read_exact
    server.limit_incoming(None)
    assert stream.read_exact.__func__ is type(stream).read_exact
    writer.write(binary_header(70_000) + bytes(70_000))
    assert await asyncio.wait_for(server.recv(), 5) == bytes(70_000)
    server.limit_incoming(65536)
    assert stream.read_exact.__func__ is not type(stream).read_exact
    writer.close()
    await transport.close()
