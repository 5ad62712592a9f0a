"""A peer that speaks the wire format by hand: to go silent, or to send bad input."""

from __future__ import annotations

import asyncio
import socket
import struct
from urllib.parse import urlsplit

from p2phost._runtime import Hello, Kind, decode
from p2phost_sdk import Connection, ConnectionClosed, Identity, TransportError
from tests.runtime.conftest import MemoryTransport, TcpTransport


def hello_frame(identity: Identity, codecs: tuple[str, ...] = ("application/json",), *,
                client: bool = False) -> bytes:
    """A valid HELLO frame for ``identity`` (``client``: one saying so, as a CLI's)."""
    return Hello(peer_id=identity.peer_id, codecs=codecs, session="raw", nonce="raw",
                 extra={"client": True} if client else {}).to_frame()


def length_prefixed(payload: bytes) -> bytes:
    """``payload`` as one tcp-transport frame."""
    return struct.pack("!I", len(payload)) + payload


class RawPeer:
    """A handshaken connection driven by hand."""

    def __init__(self, connection: Connection, identity: Identity) -> None:
        self.connection = connection
        self.identity = identity

    @classmethod
    async def connect(cls, kind: str, address: str) -> RawPeer:
        """Dial ``address`` and complete the hello exchange (no security plugin)."""
        transport = TcpTransport() if kind == "tcp" else MemoryTransport()
        connection = await transport.dial(address, timeout=5)
        identity = Identity.generate()
        await connection.send(hello_frame(identity))
        assert decode(await connection.recv()).kind is Kind.HELLO
        return cls(connection, identity)

    async def pings_until_closed(self, timeout: float = 10) -> int:
        """Read (never answer) until the node closes the connection; the PINGs seen."""
        pings = 0
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frame = await self.connection.recv()
                except (ConnectionClosed, TransportError):
                    return pings
                pings += decode(frame).kind is Kind.PING


async def dial_as(address: str, identity: Identity, nonce: str, session: str = "raw"
                  ) -> Connection:
    """A hand-made tcp connection of ``identity`` named by ``nonce`` (two of one identity
    and session are duplicates a node keeps one of: the smaller nonce; another session
    is the same peer after a restart), its hello exchanged."""
    connection = await TcpTransport().dial(address, timeout=5)
    await connection.send(Hello(peer_id=identity.peer_id, codecs=("application/json",),
                                session=session, nonce=nonce).to_frame())
    assert decode(await connection.recv()).kind is Kind.HELLO
    return connection


async def raw_tcp(address: str, *, handshake: bool, client: bool = False
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP socket to a tcp:// node, after a hand-made hello when ``handshake``
    (``client``: a hello saying client)."""
    parts = urlsplit(address)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    if handshake:
        writer.write(length_prefixed(hello_frame(Identity.generate(), client=client)))
        size = struct.unpack("!I", await reader.readexactly(4))[0]
        assert decode(await reader.readexactly(size)).kind is Kind.HELLO
    return reader, writer


async def nonreading_tcp(address: str, identity: Identity) -> asyncio.StreamWriter:
    """A TCP connection to a tcp:// node, hello sent as ``identity``, that never reads: its
    receive buffer is small, so the node's writes to it stall soon."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(length_prefixed(hello_frame(identity)))
    await writer.drain()
    return writer


async def closed_by_node(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    """Everything the node sends until it closes the connection (fails after timeout)."""
    async with asyncio.timeout(timeout):
        return await reader.read()
