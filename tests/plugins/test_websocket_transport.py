"""websocket-transport: the transport kit, and what a WebSocket endpoint refuses."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from p2phost_sdk import Connection, TransportError
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
