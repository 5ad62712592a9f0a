"""Raw bodies (``p2phost_sdk.Raw``): bytes sent without the codec arrive as they were,
large ones included, over tcp and memory alike; a peer whose node reads codec bodies
only gets them as ``bytes`` through its codec."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from p2phost._runtime.node import _connections
from p2phost_sdk import RAW_CONTENT_TYPE, App, FrameTooLarge, Message, Raw, handler
from tests.runtime.conftest import MakeNode

BIG = bytes(range(256)) * 12_000  # 3 MB: a large frame on tcp


class Sink(App):
    name = "sink"

    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[Any, str]] = asyncio.Queue()

    @handler("blob")
    async def blob(self, message: Message) -> None:
        self.got.put_nowait((message.body, message.content_type))

    @handler("size")
    async def size(self, message: Message) -> int:
        return len(message.body)


async def test_a_raw_body_arrives_as_its_bytes_without_the_codec(make_node: MakeNode) -> None:
    sink = Sink()
    server = await make_node([sink], max_frame_size=4 << 20)
    client = await make_node(listen=[], max_frame_size=4 << 20)  # JSON: no bytes in it
    peer = await client.connect(server.addresses[0])
    for _ in range(3):
        await client.send(peer, "blob", Raw(b"head:", memoryview(BIG), bytearray(b"!")))
        await client.send(peer, "blob", {"after": "a codec body"})
    for _ in range(3):
        body, content_type = await asyncio.wait_for(sink.got.get(), 10)
        assert isinstance(body, memoryview) and content_type == RAW_CONTENT_TYPE
        assert bytes(body) == b"head:" + BIG + b"!"
        assert await asyncio.wait_for(sink.got.get(), 10) == ({"after": "a codec body"},
                                                               "application/json")
    assert await client.request(peer, "size", Raw(b"abc")) == 3
    assert await client.publish("blob", Raw(b"to all")) == 1
    body, _ = await asyncio.wait_for(sink.got.get(), 10)
    assert bytes(body) == b"to all"


async def test_a_raw_body_over_the_frame_limit_is_refused_before_it_is_sent(
        make_node: MakeNode) -> None:
    server = await make_node([Sink()], max_frame_size=1 << 20)
    client = await make_node(listen=[], max_frame_size=1 << 20)
    peer = await client.connect(server.addresses[0])
    with pytest.raises(FrameTooLarge, match="raw message on 'blob'"):
        await client.send(peer, "blob", Raw(BIG))
    assert await client.request(peer, "size", Raw(b"still fine")) == 10


async def test_a_peer_that_reads_codec_bodies_only_gets_bytes(
        make_node: MakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = Sink()
    # The hellos do not say the nodes read raw bodies, as an older node's does not.
    monkeypatch.setattr(_connections, "RAW_HELLO", "not-raw")
    server = await make_node([sink], codecs=("application/msgpack",))
    client = await make_node(listen=[], codecs=("application/msgpack",))
    peer = await client.connect(server.addresses[0])
    await client.send(peer, "blob", Raw(b"ab", b"cd"))
    assert await asyncio.wait_for(sink.got.get(), 10) == (b"abcd", "application/msgpack")


WIDE = "ü" * 100  # 100 characters, 200 bytes of topic in the frame


class WideSink(App):
    name = "wide"

    @handler(WIDE)
    async def wide(self, message: Message) -> int:
        return len(message.body)


async def test_a_raw_body_that_fits_only_without_its_envelope_is_refused(
        make_node: MakeNode) -> None:
    # The header, the topic's bytes and the content type count against the limit too.
    limit = 1 << 20
    server = await make_node([WideSink()], max_frame_size=limit)
    client = await make_node(listen=[], max_frame_size=limit)
    peer = await client.connect(server.addresses[0])
    with pytest.raises(FrameTooLarge, match="raw message on"):
        await client.send(peer, WIDE, Raw(bytes(limit - 200)))
    assert await client.request(peer, WIDE, Raw(b"still fine")) == 10
