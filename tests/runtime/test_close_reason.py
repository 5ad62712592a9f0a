"""Why a connection closed is logged with its cause, even when the writer ends first.

A security layer that reads a tampered frame (in pull mode) closes the connection under
it, then raises the cause. A write under way in between fails with a bare "connection is
closed", and that was once the only reason logged for a replayed Noise message.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from p2phost._runtime import Hello, Kind, encode
from p2phost._runtime.wire._channel import Channel
from p2phost._runtime.wire._handshake import Handshaken
from p2phost_sdk import Connection, ConnectionClosed, Identity, ProtocolViolation
from tests.discovery.plugins import use_plugin_source

use_plugin_source("json-codec")

from p2phost_json_codec import JsonCodec  # noqa: E402


class _ClosedUnderTheWriter(Connection):
    """Pull mode. Once ``tampered`` is set, its read closes it, lets a send fail on the
    closed connection, then raises the cause (as ``LayeredConnection._receive`` does)."""

    remote_address = "tcp://127.0.0.1:38768"

    def __init__(self) -> None:
        self.tampered = asyncio.Event()
        self.writer_failed = asyncio.Event()
        self.closed = False

    async def recv(self) -> bytes:
        await self.tampered.wait()
        self.closed = True
        await self.writer_failed.wait()  # the inner connection's close, awaited,
        await asyncio.sleep(0.05)  # ends after the writer's task did
        raise ProtocolViolation(f"a Noise message from {self.remote_address} failed "
                                "authentication (replayed); connection closed")

    async def send(self, frame: bytes) -> None:
        if self.closed:
            self.writer_failed.set()
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")

    def try_send(self, frame: bytes) -> bool:
        return False

    async def close(self) -> None:
        self.closed = True


async def test_a_tampered_frame_is_the_reason_though_the_writer_failed_first(
        caplog: pytest.LogCaptureFixture) -> None:
    connection = _ClosedUnderTheWriter()
    hello = Hello(peer_id=Identity.generate().peer_id, codecs=("application/json",))
    channel = Channel(Handshaken(connection, hello, JsonCodec()),
                      address=connection.remote_address, initiator=False, local_nonce="n",
                      on_message=lambda *_: None, on_reply=lambda *_: None,
                      outbox_limit=1 << 20, max_frame_size=1 << 20)
    caplog.set_level(logging.INFO)
    running = asyncio.create_task(channel.run())
    await asyncio.sleep(0)
    connection.tampered.set()
    await asyncio.sleep(0)
    channel.post(encode(Kind.PING, 0))  # a write under way as the read closes
    reason = await asyncio.wait_for(running, 5)
    assert "failed authentication" in reason, reason
    assert any(record.levelno == logging.WARNING and "failed authentication" in
               record.getMessage() for record in caplog.records), caplog.text
