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

    async def logged(self, words: str, timeout: float = 20) -> None:
        """Wait until the node's log says ``words``."""
        deadline = time.monotonic() + timeout
        while words not in self.stderr:
            assert time.monotonic() < deadline, self.stderr[-2000:]
            await asyncio.sleep(0.1)

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


async def noise_peer(node: NodeProcess) -> tuple[Any, Any]:
    """A peer (any key will do) past the real Noise handshake with ``node`` and the
    hello exchange: its secured connection and the raw one under it."""
    from tests.discovery.plugins import use_plugin_source

    for name in ("tcp-transport", "noise-security"):
        use_plugin_source(name)
    from p2phost_noise_security import NoiseSecurity
    from p2phost_tcp_transport import TcpTransport

    identity = Identity.generate()
    raw = await TcpTransport().dial(node.address, timeout=10)
    secured = await NoiseSecurity().secure(raw, identity=identity, initiator=True,
                                           expected_peer_id=None, timeout=10)
    await secured.send(Hello(peer_id=identity.peer_id, codecs=("application/json",),
                             session="raw", nonce="raw").to_frame())
    assert decode(await secured.recv()).kind is Kind.HELLO  # the node's: in
    return secured, raw


def sealed(secured: Any, plaintext: bytes) -> bytes:
    """``plaintext`` as the next Noise message of ``secured`` (its records as given)."""
    from p2phost_noise_security._noise import pack_nonce

    nonce = secured._send_nonce
    secured._send_nonce = nonce + 1
    return bytes(secured._encrypt(pack_nonce(nonce), plaintext, None))


async def closed_by_node(secured: Any, timeout: float) -> bool:
    """Read until the node closes ``secured``; whether it did within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await secured.recv()
    except TimeoutError:
        return False
    except TransportError:
        return True


async def test_after_a_noise_handshake_a_frame_over_a_noise_message_is_refused(
        start_node: Any) -> None:
    """Every frame of a noise connection is one Noise message (at most 65535 bytes): a
    peer past the handshake must not make the node buffer 16 MiB."""
    node = start_node(security="noise")
    before = node.rss()

    async def attack() -> tuple[Any, asyncio.Future[None]]:
        secured, raw = await noise_peer(node)
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


@pytest.mark.parametrize(("record", "reason"), [
    (0x8000_0000, "carried an empty piece of a frame"),  # length 0, more follows
    (0x8000_0001, "over the 259 a frame of the maximum size"),  # 1 byte, more follows
])
async def test_noise_records_of_tiny_pieces_close_the_connection_at_once(
        start_node: Any, record: int, reason: str) -> None:
    """A peer past the handshake sends messages of records that each add a piece (empty,
    or of one byte) to a frame that never ends. Each piece was kept until then: these
    2 x 60 messages (7.7 MB) grew the node by over 500 MB, and only the keepalive (15 s,
    no cause logged) ended the connections. Refused at once, with the cause."""
    node = start_node(security="noise")
    before = node.rss()
    attackers = [await noise_peer(node) for _ in range(2)]
    piece = struct.pack("!I", record) + b"x" * (record & 0xFFFF)
    plaintext = piece * ((65535 - 16) // len(piece))
    for _ in range(60):
        for secured, raw in attackers:
            with contextlib.suppress(TransportError, OSError):  # once the node closed it
                await raw.send(sealed(secured, plaintext))
    closed = await asyncio.gather(*(closed_by_node(s, 5) for s, _ in attackers))
    grown = node.rss() - before
    for secured, _ in attackers:
        await secured.close()
    print(f"2 x 60 messages of records {record:#x}: the node grew by {grown / MB:.0f} MB")
    assert all(closed), "the node kept the connection open (until the keepalive?)"
    assert grown < 40 * MB, f"the node grew by {grown / MB:.0f} MB"
    log = node.stop()
    assert "Traceback" not in log
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert sum(reason in line and "protocol error" in line for line in warnings) == 2, log


async def test_a_replayed_noise_message_is_a_warning_with_its_cause(start_node: Any) -> None:
    """Tampering (here a replay) closes the connection at once, logged as a warning that
    says why, as any protocol error; it was an INFO line, once with no cause at all."""
    node = start_node(security="noise")
    secured, raw = await noise_peer(node)
    ping = encode(Kind.PING, 0)
    message = sealed(secured, struct.pack("!I", len(ping)) + ping)
    await raw.send(message)
    await raw.send(message)  # again: under a nonce the node has used
    closed = await closed_by_node(secured, 5)
    await secured.close()
    assert closed
    log = node.stop()
    assert any(line.startswith("WARNING") and "protocol error" in line
               and "failed authentication (altered, replayed" in line
               for line in log.splitlines()), log


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
            async with asyncio.timeout(15):
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
    # Cut as a peer that does not read, or else as one that fell silent: a peer whose
    # receive buffer is full and tiny drops the node's segments, and with them their
    # ACKs of what it sent, so its own sends stall in its kernel too (both sides in
    # retransmission backoff: seen with `ss -ti` in about one run in ten under load).
    assert "the peer does not read" in log \
        or ("and took nothing sent to it" in log and "(keepalive timeout)" in log)
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


async def test_a_16_mib_first_message_on_websocket_is_refused_at_the_cap(
        start_node: Any) -> None:
    """websocket-transport honours the handshake's cap (Connection.limit_incoming): a
    message announced at 16 MiB before the handshake is refused with 1009 once what came
    of it passes the cap (before: buffered whole; 40 of them grew the node by 672 MB)."""
    from tests.plugins.test_websocket_transport import _upgraded, binary_header, close_code

    node = start_node(transport="ws", security="noise", handshake_limit=1000,
                      handshake_limit_per_source=1000)
    before = node.rss()

    async def attack() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await _upgraded(node.address)
        writer.write(binary_header(16 * MB - 64) + bytes(4 * MB))
        return reader, writer

    attackers = await asyncio.gather(*(attack() for _ in range(20)))
    await asyncio.sleep(1.0)  # well within the handshake timeout: all would be held now
    grown = node.rss() - before
    codes = await asyncio.gather(*(close_code(reader) for reader, _ in attackers))
    for _, writer in attackers:
        writer.close()
    print(f"20 messages announced at 16 MiB on ws: the node grew by {grown / MB:.1f} MB")
    assert codes == [1009] * 20
    assert grown < 20 * MB, f"the node grew by {grown / MB:.0f} MB"
    log = node.stop()
    assert "Traceback" not in log


async def test_a_websocket_connection_refused_at_admission_buffers_nothing(
        start_node: Any) -> None:
    """A connection refused before its handshake (here: the ninth and later from one
    address, over handshake-limit-per-source) is capped too while its GOODBYE goes out:
    before, websocket-transport took in each refused peer's 16 MiB message whole (12 of
    them grew the node by about 84 MB, never given back)."""
    from tests.plugins.test_websocket_transport import _upgraded, binary_header

    node = start_node(transport="ws", security="noise", handshake_limit=1000)
    before = node.rss()

    async def attack() -> asyncio.StreamWriter:
        _, writer = await _upgraded(node.address)
        writer.write(binary_header(16 * MB - 64) + bytes(4 * MB))
        return writer

    attackers = await asyncio.gather(*(attack() for _ in range(20)))
    await asyncio.sleep(1.0)  # within the handshake timeout: all would be held now
    grown = node.rss() - before
    for writer in attackers:
        writer.close()
    print(f"20 messages at 16 MiB on ws, 12 refused at admission: grew {grown / MB:.1f} MB")
    assert grown < 20 * MB, f"the node grew by {grown / MB:.0f} MB"
    log = node.stop()
    assert "too many handshakes in progress" in log
    assert "Traceback" not in log


async def test_a_16_mib_first_frame_on_quic_is_refused_at_the_cap(start_node: Any) -> None:
    """quic-transport honours the handshake's cap: a frame announced at 16 MiB before the
    handshake gets no flow-control credit beyond the window, and is refused at its
    length with a reason (before: taken in whole, then refused as a Noise message)."""
    from tests.discovery.plugins import use_plugin_source

    use_plugin_source("quic-transport")
    from p2phost_quic_transport import QuicTransport

    node = start_node(transport="quic", security="noise", handshake_limit=1000,
                      handshake_limit_per_source=1000)
    before = node.rss()
    transport = QuicTransport()

    async def attack() -> str:
        raw = await transport.dial(node.address, timeout=10)
        try:
            with pytest.raises(TransportError) as refused:
                async with asyncio.timeout(10):
                    await raw.send(bytes(16 * MB - 64))
            return str(refused.value)
        finally:
            await raw.close()

    reasons = await asyncio.gather(*(attack() for _ in range(8)))
    grown = node.rss() - before
    await transport.close()
    print(f"8 frames of 16 MiB on quic: the node grew by {grown / MB:.1f} MB")
    assert all("16777152 bytes, over the maximum of 65536 bytes" in r for r in reasons), reasons
    assert grown < 15 * MB, f"the node grew by {grown / MB:.0f} MB"
    log = node.stop()
    assert "Traceback" not in log


async def test_quic_connections_without_a_handshake_get_little_credit(
        start_node: Any) -> None:
    """Before its handshake a QUIC peer may make the node hold no more than about the
    handshake's cap (64 KiB): here each of 40 connections sends as much as its
    flow-control credit allows on two streams, byte 0 of each held back, so the node
    can deliver none of it and keeps it all until the handshake timeout (before: 1 MiB
    per stream, 2 MiB per connection; 40 grew the node by about 48 MB)."""
    import ssl

    from aioquic.asyncio.client import connect
    from aioquic.quic.configuration import QuicConfiguration

    node = start_node(transport="quic", security="noise")
    before = node.rss()
    configuration = QuicConfiguration(is_client=True, alpn_protocols=["p2phost"],
                                      verify_mode=ssl.CERT_NONE)
    clients = []
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(40):
            client = await stack.enter_async_context(
                connect(node.host, node.port, configuration=configuration))
            quic = client._quic
            for stream in (0, 4):
                quic.send_stream_data(stream, bytes(4 * MB))
                quic._streams[stream].sender._pending.subtract(0, 1)
            client.transmit()
            clients.append(client)

        def sent() -> int:
            return sum(s.sender.highest_offset for c in clients
                       for s in c._quic._streams.values())

        # Until the senders stop (out of credit), within the handshake timeout (10 s).
        last, deadline = -1, time.monotonic() + 8
        while sent() != last and time.monotonic() < deadline:
            last = sent()
            await asyncio.sleep(1.0)
        grown = node.rss() - before
        total = sent()
    print(f"40 QUIC connections without a handshake, each sending all its credit "
          f"({total / 40 / 1024:.0f} KiB each): the node grew by {grown / MB:.1f} MB")
    assert total <= 40 * 66 * 1024, f"the node gave {total} bytes of credit"
    assert grown < 16 * MB, f"the node grew by {grown / MB:.0f} MB"
    assert "Traceback" not in node.stop()


#: A hostile GOODBYE reason: 1 MB of lines, terminal escapes and fixes of its own, after
#: a refusal's words (so a dialler takes it for a peer limit).
HOSTILE_REASON = ("peer limit reached" + "; fix: rm -rf ~\n\x1b[2J\x1b[31mFAKE\r\n" * 30_000
                  ).encode()


def assert_bounded(text: str) -> None:
    """Nothing of the hostile reason but a bounded, printable line of it in ``text``."""
    assert len(text) < 20_000, len(text)
    assert "\x1b" not in text and "fix: rm" not in text
    assert max(map(len, text.splitlines()), default=0) < 1000


async def test_a_1_mb_goodbye_reason_is_one_bounded_line_in_the_log(start_node: Any) -> None:
    """A connected peer's GOODBYE reason is logged (and given to plugins) as one short
    printable line, never its megabyte of newlines and escapes."""
    node = start_node(log="DEBUG")
    reader, writer = await open_from(node)
    writer.write(framed(hello()))
    size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    assert decode(await reader.readexactly(size)).kind is Kind.HELLO
    writer.write(framed(encode(Kind.GOODBYE, 0, body=HOSTILE_REASON)))
    await writer.drain()
    await until_closed(reader, 2)  # the node answers, then waits for this end to close
    writer.close()
    await node.logged("disconnected from")
    log = node.stop()
    assert "said goodbye: peer limit reached" in log
    assert_bounded(log)


async def test_a_1_mb_refusal_after_the_hellos_is_kept_and_logged_cut(
        start_node: Any) -> None:
    """A peer that refuses this node's hello (a GOODBYE after its own) with a megabyte
    of words: the node logs and keeps (``p2phost peers`` shows it) one bounded line."""
    node = start_node(log="DEBUG")
    served = asyncio.Event()
    refuser = Identity.generate().peer_id

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!I", await reader.readexactly(4))[0]
        await reader.readexactly(size)  # the node's hello
        own = Hello(peer_id=refuser, codecs=("application/json",), session="raw", nonce="raw")
        writer.write(framed(own.to_frame())
                     + framed(encode(Kind.GOODBYE, 0, body=HOSTILE_REASON)))
        await writer.drain()
        served.set()
        await until_closed(reader, 0.5)  # the node's GOODBYE in answer
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert node.ask(f"dial tcp://127.0.0.1:{port} {refuser}") == "ok"
        await asyncio.wait_for(served.wait(), 20)
        deadline = time.monotonic() + 20
        while "refused_reason" not in (dialling := node.ask("dialling")):
            assert time.monotonic() < deadline, dialling
            await asyncio.sleep(0.1)
        assert "(peer limit reached; fix - rm" in json.loads(dialling)["refused_reason"]
        assert_bounded(dialling)
        # What `p2phost peers` prints of it (the lines of the control socket's answer).
        from p2phost._cli._discovery_status import discovery_lines

        shown = discovery_lines({"discovery": {"dialling": json.loads(dialling)}})
        assert any("peer limit reached" in text for _, text, _ in shown)
        assert_bounded("\n".join(f"{text}; fix: {fix}" for _, text, fix in shown))
    log = node.stop()
    assert "ended the connection as it opened" in log
    assert_bounded(log)


#: Words no peer's list entry may bring into a log or ``p2phost peers``.
ESCAPES = "\n\x1b[2J\x1b[31mFAKE; fix: rm -rf ~\r\n"


def hostile_hello(codecs: list[str]) -> bytes:
    """A hello whose every list is as long, and its entries as wild, as a hello can hold."""
    body = {"peer_id": Identity.generate().peer_id, "host_api": "1.0", "codecs": codecs,
            "topics": ["echo", ESCAPES * 30, "x" * 256, *(f"t{i}" for i in range(5000))],
            "listen": [f"tcp://{ESCAPES}", "tcp://" + "h" * 300,
                       *(f"tcp://127.0.0.1:{i}" for i in range(1, 40))],
            "session": ESCAPES * 100, "nonce": ESCAPES * 100, "name": "hostile"}
    frame = encode(Kind.HELLO, 0, body=json.dumps(body).encode(),
                   content_type=b"application/json")
    assert len(frame) < 65536, len(frame)  # what a node takes before the handshake
    return frame


async def test_a_hellos_lists_are_bounded_in_peers_and_the_log(start_node: Any) -> None:
    """A peer whose hello lists thousands of topics, codecs and addresses with lines,
    escapes and fixes of their own: ``p2phost peers --json`` (the control socket's answer)
    shows its usable topics only, the log one bounded line; a refusal for its codecs names
    them cut."""
    node = start_node(log="DEBUG")
    reader, writer = await open_from(node)
    writer.write(framed(hostile_hello([ESCAPES * 30, "application/json",
                                       *(f"c{i}" for i in range(40))])))
    size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    assert decode(await reader.readexactly(size)).kind is Kind.HELLO
    answer = node.ask("peers")
    [peer] = json.loads(answer)["peers"]
    assert "echo" in peer["topics"] and peer["codec"] == "application/json"
    assert len(peer["topics"]) <= 4096
    assert all(t.isprintable() and len(t) <= 255 for t in peer["topics"]), peer["topics"][:3]
    assert "\\u001b" not in answer and "fix: rm" not in answer and "\\n" not in answer
    writer.close()

    # No codec in common: the node says so in its GOODBYE and its log, the peer's cut.
    reader, writer = await open_from(node)
    writer.write(framed(hostile_hello(["a" * 255] * 16)))
    size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    refusal = decode(await reader.readexactly(size))
    assert refusal.kind is Kind.GOODBYE and b"no codec in common" in refusal.body
    assert len(refusal.body) < 1000, len(refusal.body)
    writer.close()
    await node.logged("no codec in common")
    log = node.stop()
    assert ("hello: left out 26 of its 42 codecs, 907 of its 5003 topics, 25 of its 41 listen"
            " addresses") in log, log[-3000:]
    assert_bounded(log)
