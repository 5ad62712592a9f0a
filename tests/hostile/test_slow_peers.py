"""Peers that send or read slowly, against a node in a process of its own (RSS measured).

A peer past the handshake may announce a frame up to ``max-frame-size`` (16 MiB) and
then trickle it: the node's buffer for it grows with what arrived, not to the size
announced. A peer that reads a large reply slowly but steadily is served: the write
timeout counts time without progress, not the time a whole reply takes.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from p2phost._runtime import Kind, decode, encode
from tests.hostile.test_hostile_peers import MB, framed, hello, open_from, start_node

__all__ = ["start_node"]


async def joined(node: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection past the handshake (no security plugin: the hellos only)."""
    reader, writer = await open_from(node)
    writer.write(framed(hello()))
    size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    assert decode(await reader.readexactly(size)).kind is Kind.HELLO
    return reader, writer


async def test_announced_16_mib_frames_trickled_cost_what_was_sent(start_node: Any) -> None:
    node = start_node()
    before = node.rss()
    peers = [await joined(node) for _ in range(40)]
    try:
        for _, writer in peers:  # 16 MiB announced, 64 KiB sent, the rest never
            writer.write(struct.pack("!I", 16 * MB - 1) + b"x" * 65536)
            await writer.drain()
        await asyncio.sleep(1.5)
        grown = node.rss() - before
        print(f"40 trickled 16 MiB frames: the node grew by {grown / MB:.0f} MB")
        # 40 x 16 MiB would be 640 MB; 40 buffers of 1 MiB are what the bound allows.
        assert grown < 80 * MB, f"the node grew by {grown / MB:.0f} MB"
        # A large frame that does arrive whole, trickled, is still read right.
        reader, writer = peers[0]
        writer.close()
        reader, writer = await joined(node)
        body = json.dumps("y" * (5 * MB)).encode()
        frame = framed(encode(Kind.REQUEST, 1, b"echo", body))
        for start in range(0, len(frame), 300_000):
            writer.write(frame[start:start + 300_000])
            await writer.drain()
            await asyncio.sleep(0.01)
        size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 30))[0]
        reply = decode(await reader.readexactly(size))
        assert reply.kind is Kind.REPLY and reply.body == body
        writer.close()
    finally:
        for _, writer in peers:
            writer.close()
    assert "Traceback" not in node.stop()
