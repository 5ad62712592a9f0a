"""Bad input closes that one connection, with a logged reason; every other peer is served.
A malformed address in ``[node]`` stops the start, naming it."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from recorder_app import Recorder

from p2phost._runtime import Kind, Node, encode
from p2phost._runtime._errors import NodeConfigError
from tests.runtime.conftest import build_node
from tests.runtime.rawpeer import closed_by_node, length_prefixed, raw_tcp

MAX = 64 * 1024
_bad_version = bytearray(encode(Kind.MESSAGE, 1, b"record", b"1"))
_bad_version[0] = 9

# name -> (handshake first?, bytes to send, what the node's log must say)
CASES = {
    "oversized frame": (True, struct.pack("!I", MAX + 1) + b"x" * 100, "over the maximum"),
    "oversized before hello": (False, struct.pack("!I", 0xFFFFFFFF), "over the maximum"),
    "truncated frame": (True, struct.pack("!I", 1000) + b"y" * 10, "truncated frame"),
    "garbage bytes": (True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "over the maximum"),
    "garbage frame": (True, length_prefixed(b"\x01\x00garbage"), "shorter than the"),
    "garbage hello": (False, length_prefixed(b"\x01\x63" + bytes(38)),
                      "unknown envelope kind 99"),
    "unknown version": (True, length_prefixed(bytes(_bad_version)), "unknown envelope version 9"),
    "undecodable body": (True, length_prefixed(encode(Kind.MESSAGE, 1, b"record", b"\xff{")),
                         "body is not valid JSON"),
    "lying string lengths": (True, length_prefixed(
        struct.pack("!BBQQQBBBB", 1, 0, 1, 0, 0, 0, 0, 200, 0) + b"short"), "longer than the"),
    "a second hello": (True, length_prefixed(encode(Kind.HELLO, 0, body=b"{}")),
                       "a second hello"),
}


async def send_bad_input(address: str, case: str, max_frame_size: int = MAX) -> None:
    """Send the bad input of ``case`` to a tcp node; return once it closed the connection."""
    handshake, data, _ = CASES[case]
    if case == "oversized frame":
        data = struct.pack("!I", max_frame_size + 1) + data[4:]
    reader, writer = await raw_tcp(address, handshake=handshake)
    writer.write(data)
    if case == "truncated frame":
        writer.write_eof()
    await writer.drain()
    await closed_by_node(reader)
    writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Node]:
    node = build_node("tcp", [Recorder()], max_frame_size=MAX, handshake_timeout=0.5)
    await node.start()
    yield node
    await node.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_closes_only_that_connection(
    server: Node, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = build_node("tcp", listen=[])
    await client.start()
    try:
        peer = await client.connect(server.addresses[0])
        await send_bad_input(server.addresses[0], case)
        assert CASES[case][2] in caplog.text
        # The well-behaved peer never noticed.
        assert await client.request(peer, "record", case) == 1
    finally:
        await client.close()


async def test_a_handshake_that_never_finishes_is_cut_off(
    server: Node, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await raw_tcp(server.addresses[0], handshake=False)
    started = asyncio.get_running_loop().time()
    said = await closed_by_node(reader, timeout=5)
    assert asyncio.get_running_loop().time() - started < 3
    assert b"did not finish within 0.5s" in said, "the node says why before closing"
    assert "handshake did not finish within 0.5s" in caplog.text
    writer.close()


@pytest.mark.parametrize("key", ["listen", "connect"])
@pytest.mark.parametrize("address", ["tcp:/127.0.0.1:7400", "127.0.0.1:7400",
                                     "tcp://127.0.0.1:99999"])
async def test_a_malformed_node_address_is_refused_at_start_naming_its_key(
        key: str, address: str) -> None:
    # One check of [node] listen and connect at start, whatever is wrong with the form (no
    # scheme://, a bad port): the same message names the key and a fix that passes.
    node = build_node("tcp", **{"listen": [], key: [address]})
    with pytest.raises(NodeConfigError) as caught:
        await node.start()
    assert caught.value.message.startswith(f"[node] {key}: bad address {address!r}: ")
    fix = caught.value.fix or ""
    assert fix.startswith(f"in [node] {key} of p2phost.toml, write the address as tcp://"), fix
    assert node.addresses == []


async def test_an_uppercase_scheme_is_served_by_its_transport() -> None:
    # Schemes are case-insensitive (RFC 3986), as `p2phost doctor` reads them.
    node = build_node("tcp", listen=["TCP://127.0.0.1:0"])
    await node.start()
    try:
        assert node.addresses[0].startswith("tcp://127.0.0.1:")
    finally:
        await node.close()
