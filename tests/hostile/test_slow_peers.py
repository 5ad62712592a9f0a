"""Peers that send or read slowly, against a node in a process of its own (RSS measured).

A peer past the handshake may announce a frame up to ``max-frame-size`` (16 MiB) and
then trickle it: the node's buffer for it grows with what arrived, not to the size
announced. A peer that reads a large reply slowly but steadily is served: the write
timeout counts time without progress, not the time a whole reply takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from typing import Any

import pytest

from p2phost._runtime import Hello, Kind, decode, encode
from p2phost_sdk import Identity
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


async def read_slowly(reader: asyncio.StreamReader) -> Any:
    """The next frame, read 16 KiB every 40 ms (about 400 KB/s)."""
    size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    got = bytearray()
    while len(got) < size:
        got += await asyncio.wait_for(reader.read(min(16384, size - len(got))), 10)
        await asyncio.sleep(0.04)
    return decode(bytes(got))


async def test_a_slow_but_steady_reader_is_served_and_a_stopped_one_cut(
    start_node: Any
) -> None:
    # 3 s, not less: this test's own process is the slow reader, and a loaded machine may
    # stall it for a second or two without it having stopped.
    node = start_node(keepalive_timeout=3.0, keepalive_interval=0.8)

    async def slow_reader() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket()
        # Small buffers, fixed before connecting: the node's writes wait for our reads.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (node.host, node.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16384)
        writer.write(framed(hello()))
        size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
        assert decode(await reader.readexactly(size)).kind is Kind.HELLO
        writer.write(framed(encode(Kind.PING, 0)))  # answered: the handshake is done
        while (await read_slowly(reader)).kind is not Kind.PONG:
            pass  # the node's own keepalive PING
        return reader, writer

    body = json.dumps("z" * (4 * MB)).encode()
    request = framed(encode(Kind.REQUEST, 1, b"echo", body))
    # Steady: 4 MiB at about 400 KB/s, ten seconds for a reply when the timeout is 3 s.
    reader, writer = await slow_reader()
    writer.write(request)
    started = time.monotonic()
    reply = await read_slowly(reader)
    while reply.kind is Kind.PING:  # the node's keepalive, before the reply
        reply = await read_slowly(reader)
    took = time.monotonic() - started
    assert reply.kind is Kind.REPLY and reply.body == body
    print(f"a 4 MiB reply read steadily in {took:.1f}s with a 3 s timeout")
    assert took > 4, "the reader was not slow: the test proves nothing"
    writer.close()
    log = node.stderr
    assert "does not read" not in log and "keepalive timeout" not in log, log
    # Stopped: half a reply read, then nothing. Cut within a few timeouts, with the reason.
    reader, writer = await slow_reader()
    writer.write(request)
    await asyncio.wait_for(reader.readexactly(2 * MB), 30)
    await asyncio.sleep(10)
    writer.close()
    log = node.stop()[len(log):]
    assert "took nothing sent to it, for" in log or "the peer does not read" in log, log
    assert "Traceback" not in log


async def send_slowly(writer: asyncio.StreamWriter, data: bytes, rate: int) -> None:
    """``data`` at about ``rate`` bytes a second, in tenths of a second."""
    step = rate // 10
    for start in range(0, len(data), step):
        writer.write(data[start:start + step])
        await writer.drain()
        await asyncio.sleep(0.1)


async def test_a_slow_but_steady_sender_of_a_large_frame_is_heard_and_a_stalled_one_cut(
    start_node: Any
) -> None:
    node = start_node(keepalive_timeout=3.0, keepalive_interval=0.8)  # (3 s: see above)
    body = json.dumps("s" * (4 * MB)).encode()
    request = framed(encode(Kind.REQUEST, 1, b"echo", body))
    # Steady: 4 MiB at about 400 KB/s, ten seconds for one frame when the timeout is 3 s.
    reader, writer = await joined(node)
    started = time.monotonic()
    await send_slowly(writer, request, 400_000)
    took = time.monotonic() - started
    size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    while (reply := decode(await reader.readexactly(size))).kind is Kind.PING:
        size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 20))[0]
    assert reply.kind is Kind.REPLY and reply.body == body
    print(f"a 4 MiB frame sent steadily in {took:.1f}s with a 3 s keepalive timeout")
    assert took > 6, "the sender was not slow: the test proves nothing"
    writer.close()
    log = node.stderr
    assert "keepalive timeout" not in log, log
    # Stalled: 1 MiB of the frame, then a byte a second. Cut within a few timeouts, with
    # the reason, and not blamed on the peer as a truncated frame.
    reader, writer = await joined(node)
    await send_slowly(writer, request[:MB], 4_000_000)
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        while not reader.at_eof() and time.monotonic() - started < 20:
            writer.write(b"s")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(65536), 1)
    cut = time.monotonic() - started
    writer.close()
    log = node.stop()[len(log):]
    assert reader.at_eof() and cut < 12, f"not cut within 12 s ({cut:.1f}s): {log}"
    assert log.count("bar a trickle of the frame it began") == 1, log  # said once
    assert "truncated" not in log and "protocol error" not in log, log
    assert "Traceback" not in log


async def throttled_proxy(node: Any, rate: int, *, reading: bool = False
                          ) -> tuple[str, asyncio.Event, asyncio.Server]:
    """A tcp:// address that forwards to ``node``: its way towards the node (or, with
    ``reading``, from it) at ``rate`` bytes a second once the event returned is set (the
    handshake goes at full speed)."""
    slow = asyncio.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   throttled: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(rate // 10 if throttled else 65536):
                writer.write(data)
                await writer.drain()
                if throttled and slow.is_set():
                    await asyncio.sleep(0.1)
        writer.close()

    async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        sock = socket.socket()
        if reading:  # small buffers, fixed before connecting: the node's writes wait
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (node.host, node.port))
        node_r, node_w = await asyncio.open_connection(sock=sock, limit=16384)
        await asyncio.gather(pipe(client_r, node_w, not reading),
                             pipe(node_r, client_w, reading))

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    return f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}", slow, server


async def secured_client(address: str, transport: str, security: str) -> Any:
    """A raw connection through ``address`` over ``transport`` and ``security``, past
    the hellos."""
    from tests.discovery.plugins import use_plugin_source

    for name in ("tcp-transport", "websocket-transport", "noise-security", "tls-security"):
        use_plugin_source(name)
    from p2phost_noise_security import NoiseSecurity
    from p2phost_tcp_transport import TcpTransport
    from p2phost_tls_security import TlsSecurity
    from p2phost_websocket_transport import WebSocketTransport

    identity = Identity.generate()
    if transport == "ws":
        raw = await WebSocketTransport(proxy="").dial(address.replace("tcp:", "ws:"),
                                                      timeout=10)
    else:
        raw = await TcpTransport().dial(address, timeout=10)
    secured = raw if not security else await (
        NoiseSecurity() if security == "noise" else TlsSecurity()
    ).secure(raw, identity=identity, initiator=True, expected_peer_id=None, timeout=10)
    await secured.send(Hello(peer_id=identity.peer_id, codecs=("application/json",),
                             session="raw", nonce="raw").to_frame())
    assert decode(await secured.recv()).kind is Kind.HELLO
    return secured


async def echoed_slowly(start_node: Any, transport: str, security: str, timeout: float, *,
                        reading: bool) -> tuple[Any, float, str]:
    """A node over ``transport`` and ``security`` with a keepalive ``timeout`` echoes 4 MiB
    to a peer that sends it (or, with ``reading``, reads the reply) at 400 KB/s; the
    reply checked, the node, how long that took and what the node logged by then."""
    node = start_node(transport=transport, security=security or None,
                      keepalive_timeout=timeout, keepalive_interval=timeout * 0.3)
    address, slow, proxy = await throttled_proxy(node, 400_000, reading=reading)
    secured = await secured_client(address, transport, security)
    slow.set()
    body = json.dumps("r" * (4 * MB)).encode()
    started = time.monotonic()
    sending = asyncio.ensure_future(secured.send(encode(Kind.REQUEST, 1, b"echo", body)))
    try:
        async with asyncio.timeout(40):
            while (reply := decode(await secured.recv())).kind is Kind.PING:
                pass
        took = time.monotonic() - started
        heard = node.stderr
    finally:
        sending.cancel()
        await secured.close()
        proxy.close()
    assert reply.kind is Kind.REPLY and reply.body == body, reply.kind
    return node, took, heard


@pytest.mark.parametrize(("transport", "security"), [
    ("tcp", "noise"), ("tcp", "tls"), ("ws", ""), ("ws", "noise")])
async def test_a_slow_sender_of_a_large_frame_is_heard_through_each_layer(
        start_node: Any, transport: str, security: str) -> None:
    """noise and tls assemble a large frame from records, websocket from a message's
    bytes as they arrive: what each holds counts too."""
    node, took, heard = await echoed_slowly(start_node, transport, security, 2.0,
                                            reading=False)
    print(f"{transport}+{security or 'plain'}: a 4 MiB frame at 400 KB/s heard in "
          f"{took:.1f}s, 2 s keepalive timeout")
    assert took > 6, "the sender was not slow: the test proves nothing"
    assert "keepalive timeout" not in heard, heard
    assert "Traceback" not in node.stop()


@pytest.mark.parametrize(("transport", "security"), [
    ("tcp", "tls"), ("ws", ""), ("ws", "noise")])
async def test_a_slow_but_steady_reader_of_a_large_reply_is_served_through_each_layer(
        start_node: Any, transport: str, security: str) -> None:
    """The write timeout judges a slow reader by the bytes each layer still holds
    (``Connection.unsent``: websocket's transport and kernel queue, tls's records):
    without them every reply that takes longer than the timeout to read was cut."""
    node, took, heard = await echoed_slowly(start_node, transport, security, 3.0,  # (see above)
                                            reading=True)
    print(f"{transport}+{security or 'plain'}: a 4 MiB reply read at 400 KB/s in "
          f"{took:.1f}s, 3 s keepalive timeout")
    assert took > 6, "the reader was not slow: the test proves nothing"
    assert "does not read" not in heard and "took nothing" not in heard, heard
    assert "Traceback" not in node.stop()
