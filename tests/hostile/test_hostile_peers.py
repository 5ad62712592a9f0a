"""Hostile peers against a node in a process of its own, its memory measured (/proc).

Each attack is bounded in count and time. What must hold: frames before the handshake
are capped small, handshakes in progress are limited (a normal peer still gets in), a
peer that never reads is disconnected with a reason, and [node] peer-limit counts every
admitted connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from p2phost._runtime import Hello, Kind, decode, encode
from p2phost_sdk import Identity, TransportError

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


class NodeProcess:
    """``tests.hostile.node_process`` running with ``settings``."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.stderr_path = tmp / f"node-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.node_process", json.dumps(settings)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            stderr=self.stderr_path.open("w"), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.address = self._line(30).split(" ", 1)[1]
        self._line(5)  # pid
        parts = urlsplit(self.address)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port = parts.hostname, parts.port

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def _line(self, timeout: float) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the node process said nothing within {timeout}s:\n"
                                 f"{self.stderr}") from None

    def ask(self, command: str) -> str:
        """One command's answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line(10)

    def rss(self) -> int:
        """The node's resident memory, in bytes."""
        return int(self.ask("rss"))

    def stats(self) -> dict[str, Any]:
        """The node's counters (``Node.stats``)."""
        return dict(json.loads(self.ask("stats")))

    @property
    def stderr(self) -> str:
        """What the node logged."""
        return self.stderr_path.read_text()

    def stop(self) -> str:
        """Stop the node; what it logged."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.stderr


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Any]:
    """``start_node(**options)``: a node process, stopped after the test."""
    made: list[NodeProcess] = []

    def start(**settings: Any) -> NodeProcess:
        node = NodeProcess(tmp_path, **settings)
        made.append(node)
        return node

    yield start
    for node in made:
        node.stop()


def framed(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def hello(client: bool = False) -> bytes:
    return Hello(peer_id=Identity.generate().peer_id, codecs=("application/json",),
                 session="raw", nonce="raw", extra={"client": True} if client else {}
                 ).to_frame()


async def until_closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Read until the node closes the connection; whether it did within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


async def open_from(node: NodeProcess, source: str = "127.0.0.1"
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(node.host, node.port, local_addr=(source, 0))


async def test_after_a_noise_handshake_a_frame_over_a_noise_message_is_refused(
        start_node: Any) -> None:
    """Every frame of a noise connection is one Noise message (at most 65535 bytes): a
    peer past the handshake (any key will do) must not make the node buffer 16 MiB."""
    from tests.discovery.plugins import use_plugin_source

    for name in ("tcp-transport", "noise-security"):
        use_plugin_source(name)
    from p2phost_noise_security import NoiseSecurity
    from p2phost_tcp_transport import TcpTransport

    node = start_node(security="noise")
    before = node.rss()
    transport, noise = TcpTransport(), NoiseSecurity()

    async def attack() -> tuple[Any, asyncio.Future[None]]:
        identity = Identity.generate()
        raw = await transport.dial(node.address, timeout=10)
        secured = await noise.secure(raw, identity=identity, initiator=True,
                                     expected_peer_id=None, timeout=10)
        await secured.send(Hello(peer_id=identity.peer_id, codecs=("application/json",),
                                 session="raw", nonce="raw").to_frame())
        assert decode(await secured.recv()).kind is Kind.HELLO  # the node's: in
        # One raw frame of 16 MiB: within the node's max frame size, 256 Noise messages.
        return secured, asyncio.ensure_future(raw.send(b"x" * (16 * MB - 64)))

    attackers = await asyncio.gather(*(attack() for _ in range(8)))
    await asyncio.sleep(2.0)
    grown = node.rss() - before
    for secured, sending in attackers:
        with pytest.raises(TransportError):  # closed (after a GOODBYE, or without)
            async with asyncio.timeout(10):
                while True:
                    await secured.recv()
        await asyncio.gather(sending, return_exceptions=True)
        await secured.close()
    print(f"8 frames of 16 MiB after the handshake: the node grew by {grown / MB:.0f} MB")
    assert grown < 40 * MB, f"the node grew by {grown / MB:.0f} MB"
    log = node.stop()
    assert "Traceback" not in log


@pytest.mark.parametrize("security", [None, "noise", "tls"])
async def test_a_16_mib_first_frame_is_refused_at_its_length(start_node: Any,
                                                             security: str | None) -> None:
    # Handshake limits raised: the frame cap alone must hold the memory down.
    node = start_node(security=security, handshake_limit=1000,
                      handshake_limit_per_source=1000)
    before = node.rss()

    async def attack() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await open_from(node)
        writer.write(struct.pack("!I", 16 * MB - 1) + b"x" * MB)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        return reader, writer

    attackers = await asyncio.gather(*(attack() for _ in range(200)))
    await asyncio.sleep(1.0)  # well within the handshake timeout: all would be held now
    grown = node.rss() - before
    closed = await asyncio.gather(*(until_closed(reader, 20) for reader, _ in attackers))
    for _, writer in attackers:
        writer.close()
    assert all(closed), "the node kept a connection that sent an oversized first frame"
    assert grown < 50 * MB, f"the node grew by {grown / MB:.0f} MB"
    assert node.stats()["connections"]["handshaking"] == 0
    log = node.stop()
    assert "Traceback" not in log
    assert "more failed handshakes" in log, "200 failures must not log 200 warnings"
    assert log.count("handshake failed") <= 20


async def test_held_handshakes_are_limited_and_a_normal_peer_still_connects(
    start_node: Any
) -> None:
    # A long handshake timeout: the held handshakes keep their places all along.
    node = start_node(handshake_limit_per_source=8, handshake_timeout=120.0)
    before = node.rss()
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    for _ in range(1000):
        # From 127.0.0.2: one source holding as many handshakes as it can.
        reader, writer = await open_from(node, "127.0.0.2")
        writer.write(b"\x00\x00")  # half a length: the handshake never finishes
        held.append(writer)
        readers.append(reader)
    try:
        # Until the node has taken every connection from its accept queue.
        deadline = time.monotonic() + 20
        while True:
            stats = node.stats()["connections"]
            if stats["handshaking"] + stats["refused"] >= 1000 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert stats["handshaking"] <= 8
        assert stats["refused"] >= 1000 - 8
        # A normal peer, from another source, is served.
        reader, writer = await open_from(node)
        writer.write(framed(hello()))
        size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 10))[0]
        assert decode(await reader.readexactly(size)).kind is Kind.HELLO
        writer.write(framed(encode(Kind.REQUEST, 1, b"echo", b'"hi"')))
        size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 10))[0]
        reply = decode(await reader.readexactly(size))
        assert reply.kind is Kind.REPLY and reply.body == b'"hi"'
        writer.close()
        assert node.rss() - before < 50 * MB
    finally:
        for writer in held:
            writer.close()
    log = node.stop()
    assert "Traceback" not in log
    assert log.count("refused a connection") <= 20, "refusals are logged rate-limited"


@pytest.mark.parametrize("flood", ["ping", "unknown-topic request"])
async def test_a_peer_that_sends_and_never_reads_is_disconnected(start_node: Any,
                                                                 flood: str) -> None:
    node = start_node(keepalive_timeout=3.0, keepalive_interval=1.0)
    before = node.rss()
    _, writer = await open_from(node)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(framed(hello()))
    frame = framed(encode(Kind.PING, 0)) if flood == "ping" else \
        framed(encode(Kind.REQUEST, 7, b"nope", b"null"))
    batch = frame * 10_000
    sent, started = 0, time.monotonic()
    try:
        # Up to 1M frames, never reading a byte back; bounded in time too.
        while sent < 1_000_000 and time.monotonic() - started < 60:
            writer.write(batch)
            async with asyncio.timeout(30):
                await writer.drain()
            sent += 10_000
    except (ConnectionError, OSError, TimeoutError):
        pass
    finally:
        writer.close()
    grown = node.rss() - before
    assert grown < 50 * MB, f"the node grew by {grown / MB:.0f} MB"
    assert sent < 1_000_000 or "does not read" in node.stderr
    await asyncio.sleep(0)
    log = node.stop()
    assert "the peer does not read" in log
    assert "Traceback" not in log


async def test_peer_limit_counts_every_admitted_connection(start_node: Any) -> None:
    node = start_node(peer_limit=64, handshake_limit=1000, handshake_limit_per_source=1000)

    async def join(i: int) -> tuple[bool, asyncio.StreamWriter]:
        reader, writer = await open_from(node)
        writer.write(framed(hello(client=i % 3 == 0)))
        size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
        return decode(await reader.readexactly(size)).kind is Kind.HELLO, writer

    joined = await asyncio.gather(*(join(i) for i in range(300)), return_exceptions=True)
    admitted = [j for j in joined if isinstance(j, tuple) and j[0]]
    try:
        assert len(admitted) == 64
        stats = node.stats()["connections"]
        assert stats["peers"] + stats["clients"] == 64
    finally:
        for j in joined:
            if isinstance(j, tuple):
                j[1].close()
    assert "Traceback" not in node.stop()
