"""TCP connections that move length-prefixed frames over asyncio streams.

A frame on the wire is a 4-byte big-endian length and that many bytes. Reads ask the
socket for a large chunk and split every whole frame out of it at once, so a burst of
small frames costs one read; writes of several frames are joined into one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections import deque
from urllib.parse import urlsplit

from p2phost_sdk import (
    AcceptHandler,
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    Listener,
    Transport,
    TransportError,
    check_frame_size,
)

_LENGTH = struct.Struct("!I")
_CLOSE_TIMEOUT = 2.0


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` as ``(host, port)``; TransportError says what is wrong."""
    problem = "expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:7400"
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"bad address {address!r}: the port is not 0-65535") from None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise TransportError(f"bad address {address!r}: {problem}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TransportError(f"bad address {address!r}: {problem} (no path, query or fragment)")
    return parts.hostname, port


def format_address(host: str, port: int) -> str:
    """The URL of ``host:port`` (IPv6 hosts in brackets)."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _peer_address(writer: asyncio.StreamWriter, key: str) -> str:
    name = writer.get_extra_info(key)
    return format_address(name[0], name[1]) if isinstance(name, tuple) else ""


class TcpConnection(Connection):
    """One TCP stream carrying frames both ways."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame_size: int,
        read_size: int,
        nodelay: bool,
        buffer_size: int = 0,
        local_address: str = "",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max = max_frame_size
        #: The largest frame accepted now: small until the host's handshake is done.
        self._limit = max_frame_size
        self._read_size = read_size
        self._frames: deque[bytes] = deque()
        # Bytes of a frame that straddles reads, and how many the frame needs in all.
        self._partial = bytearray()
        self._need = 0
        self._closed = False
        self.local_address = local_address or _peer_address(writer, "sockname")
        self.remote_address = _peer_address(writer, "peername")
        if hasattr(writer.transport, "max_size"):
            writer.transport.max_size = 65536
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
                if buffer_size:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)


    async def send(self, frame: bytes) -> None:
        """Send one frame."""
        check_frame_size(frame, self._max)
        await self._write(_LENGTH.pack(len(frame)) + frame)

    def try_send(self, frame: bytes) -> bool:
        """Write at once when the socket's send buffer in user space is empty."""
        transport = self._writer.transport
        if self._closed or len(frame) > self._max or transport.is_closing() \
                or transport.get_write_buffer_size():
            return False
        transport.write(_LENGTH.pack(len(frame)) + frame)
        return True

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames with one write."""
        parts: list[bytes] = []
        for frame in frames:
            check_frame_size(frame, self._max)
            parts.append(_LENGTH.pack(len(frame)))
            parts.append(frame)
        await self._write(b"".join(parts))

    async def _write(self, data: bytes) -> None:
        if self._closed or self._writer.is_closing():
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection to {self.remote_address} lost: {exc}") from exc

    def limit_incoming(self, size: int | None) -> None:
        """Refuse incoming frames over ``size`` bytes (None: ``max_frame_size`` again)."""
        self._limit = self._max if size is None else min(size, self._max)

    async def recv(self) -> bytes:
        """The next frame."""
        if not self._frames:
            await self._fill()
        return self._frames.popleft()

    async def recv_many(self) -> list[bytes]:
        """Every whole frame that has arrived (at least one), in order."""
        if not self._frames:
            await self._fill()
        frames = list(self._frames)
        self._frames.clear()
        return frames

    async def _fill(self) -> None:
        frames = self._frames
        while not frames:
            try:
                data = await self._reader.read(self._read_size)
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosed(f"connection to {self.remote_address} lost: {exc}") from exc
            if not data:
                self._eof()
            partial = self._partial
            if partial:
                partial += data
                if len(partial) < self._need:
                    continue  # a large frame is still arriving: copy it once, when whole
                data = bytes(partial)
                partial.clear()
            self._split(data)

    def _split(self, data: bytes) -> None:
        offset, end, limit = 0, len(data), self._limit
        while end - offset >= 4:
            (size,) = _LENGTH.unpack_from(data, offset)
            if size > limit:
                raise FrameTooLarge(
                    f"{self.remote_address} sent a frame of {size} bytes, over the maximum "
                    f"of {limit} bytes" + ("" if limit == self._max else
                                           " accepted before the handshake is done")
                )
            stop = offset + 4 + size
            if stop > end:
                break
            self._frames.append(data[offset + 4 : stop])
            offset = stop
        if offset < end:
            self._partial += memoryview(data)[offset:]
            self._need = 4 + _LENGTH.unpack_from(data, offset)[0] if end - offset >= 4 else 4

    def _eof(self) -> None:
        if self._partial:  # not a clean close: a protocol error
            raise TransportError(
                f"{self.remote_address} closed the connection in the middle of a frame "
                f"(truncated frame: {len(self._partial)} of {self._need} bytes)"
            )
        raise ConnectionClosed(f"{self.remote_address} closed the connection")

    async def close(self) -> None:
        """Close the stream; buffered output gets a short grace to flush."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            self._writer.transport.abort()


class TcpListener(Listener):
    """A listening TCP socket (or one per address family for a wildcard host)."""

    def __init__(self, server: asyncio.Server, addresses: list[str]) -> None:
        self._server = server
        self.addresses = addresses

    async def close(self) -> None:
        """Stop accepting; open connections belong to the node and stay open."""
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._server.wait_closed()


class TcpTransport(Transport):
    """``tcp://HOST:PORT``: listen and dial over TCP."""

    schemes = ("tcp",)

    def __init__(
        self, *, max_frame_size: int = 16 * 1024 * 1024, nodelay: bool = True,
        read_size: int = 262144, buffer_size: int = 0,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.nodelay = nodelay
        self.read_size = read_size
        self.buffer_size = buffer_size

    def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: str = ""
    ) -> TcpConnection:
        return TcpConnection(
            reader, writer, max_frame_size=self.max_frame_size, read_size=self.read_size,
            nodelay=self.nodelay, buffer_size=self.buffer_size, local_address=local,
        )

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Listen on ``address``; port 0 picks a free port (see ``Listener.addresses``)."""
        host, port = parse_address(address)
        listen_address = address

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accept(self._connection(reader, writer, listen_address))

        try:
            server = await asyncio.start_server(
                on_client, host, port, limit=self.read_size, reuse_address=True
            )
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "address already in use" if in_use else (exc.strerror or str(exc))
            raise TransportError(f"cannot listen on {address}: {reason}") from exc
        addresses = []
        for sock in server.sockets:
            name = sock.getsockname()
            addresses.append(format_address(name[0], name[1]))
        listen_address = addresses[0]
        return TcpListener(server, addresses)

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Connect to ``address`` within ``timeout`` seconds."""
        host, port = parse_address(address)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=self.read_size)
        except TimeoutError:
            raise TransportError(f"cannot reach {address}: no answer within {timeout:g}s") from None
        except ConnectionRefusedError as exc:
            raise TransportError(f"cannot reach {address}: connection refused (nothing "
                                 "listens there)") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransportError(f"cannot reach {address}: {reason}") from exc
        return self._connection(reader, writer)
