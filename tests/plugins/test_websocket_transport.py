"""websocket-transport: the transport kit, and what a WebSocket endpoint refuses."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from p2phost_sdk import Connection, TransportError
from p2phost_sdk.testing.transport import TransportCase, TransportConformance
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
