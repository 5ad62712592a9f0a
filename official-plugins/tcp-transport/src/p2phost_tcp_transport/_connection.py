"""TCP connections that move length-prefixed frames over asyncio streams.

This module is the connection itself: its state, the write side, the pull path's reads
and its close. How a read is split into frames is :mod:`._frames`'s (a base class), and
push mode, where each read's frames go to the host's sink at once, :mod:`._push`'s.

Writes of several frames are joined into one write. Large frames (``LARGE`` bytes and
over: parts of a Dask array, files) are never joined: a write hands the length and the
frame to the socket as they are. A read of a large frame fills one buffer for it; the
socket reads the rest of the frame straight into it (``_direct``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

from p2phost_sdk import ConnectionClosed, FrameSink, check_frame_size

from ._direct import DirectProtocol
from ._frames import _LENGTH, LARGE, _grow
from ._push import PushMode
from ._sockets import kernel_unsent, peer_address, tune

#: How long closing a connection or a listener may wait for the other side.
CLOSE_TIMEOUT = 2.0


class TcpConnection(PushMode):
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
        self._transport = writer.transport  # (a property: try_send reads it per frame)
        self._max = max_frame_size
        #: The largest frame accepted now: small until the host's handshake is done.
        self._limit = max_frame_size
        self._read_size = read_size
        self._frames: deque[bytes] = deque()
        # Bytes of a frame that straddles reads, and how many the frame needs in all.
        self._partial = bytearray()
        self._need = 0
        # What followed the last whole frame of a read when the next frame is over the
        # handshake's cap: the handshake may lift the cap before it asks for that frame
        # (a peer may send a large message as soon as it has our hello).
        self._held = b""
        # A large frame being read into its own buffer, how many bytes it has, its size.
        self._large: bytearray | None = None
        self._got = self._large_size = 0
        # The protocol that can read a large frame into place, and how many bytes this
        # connection took from the stream reader (the protocol counts what it fed it).
        protocol = writer.transport.get_protocol()
        self._direct = protocol if isinstance(protocol, DirectProtocol) else None
        self._taken = 0
        self._closed = False
        # Push mode: where whole frames go, and whether it was told of the end.
        self._sink: FrameSink | None = None
        self._sink_ended = False
        self.local_address = local_address or peer_address(writer, "sockname")
        self.remote_address = peer_address(writer, "peername")
        tune(writer, nodelay=nodelay, buffer_size=buffer_size)


    async def send(self, frame: bytes) -> None:
        """Send one frame."""
        check_frame_size(frame, self._max)
        if len(frame) >= LARGE:
            await self._write_parts([_LENGTH.pack(len(frame)), frame])
            return
        await self._write(_LENGTH.pack(len(frame)) + frame)

    def try_send(self, frame: bytes) -> bool:
        """Write at once when the socket's send buffer in user space is empty."""
        transport, direct = self._transport, self._direct
        if self._closed or len(frame) > self._max or transport.is_closing() \
                or transport.get_write_buffer_size() \
                or (direct is not None and (direct.writing or (
                    len(frame) >= LARGE and direct.writes_in_place))):
            return False  # (a large frame goes from its own buffer: see send)
        if len(frame) >= LARGE:  # the length, then the frame as it is: no joined copy
            transport.write(_LENGTH.pack(len(frame)))
            transport.write(frame)
            return True
        transport.write(_LENGTH.pack(len(frame)) + frame)
        return True

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames with one write."""
        parts: list[bytes] = []
        total = 0
        for frame in frames:
            check_frame_size(frame, self._max)
            parts.append(_LENGTH.pack(len(frame)))
            parts.append(frame)
            total += len(frame)
        if total >= LARGE:  # the socket takes the pieces as they are: no joined copy
            await self._write_parts(parts)
            return
        await self._write(b"".join(parts))

    async def _write_parts(self, parts: list[bytes]) -> None:
        await self._write(b"", parts)

    async def _write(self, data: bytes, parts: list[bytes] | None = None) -> None:
        if self._closed or self._writer.is_closing():
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")
        direct = self._direct
        try:
            if direct is not None:
                await direct.settle()  # what is being written goes first
                if parts is not None and await direct.write_large(parts):
                    return  # written from the parts' own buffers
            if parts is None:
                self._writer.write(data)
            else:
                self._writer.writelines(parts)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection to {self.remote_address} lost: {exc}") from exc

    def unsent(self) -> int:
        """Bytes the transport (and a large frame written in place) holds for the socket,
        and on Linux those in the socket's send queue not yet acknowledged by the peer
        (``SIOCOUTQ``): a peer that reads slowly takes from the kernel's buffer
        (megabytes) long before the transport's own moves."""
        transport, direct = self._writer.transport, self._direct
        held = int(transport.get_write_buffer_size()) + (direct.unsent if direct else 0)
        return held + kernel_unsent(transport.get_extra_info("socket"))

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
            if self._large is not None:
                await self._fill_large()
                continue
            if self._held:
                data, self._held = self._held, b""
                self._split(data)
                continue
            data = await self._read(self._read_size)
            partial = self._partial
            if partial:
                partial += data
                if len(partial) < self._need:
                    continue  # the rest of a frame header, or of a small frame
                data = bytes(partial)
                partial.clear()
            self._split(data)

    async def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes from the stream reader (at least one)."""
        try:
            data = await self._reader.read(size)
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection to {self.remote_address} lost: {exc}") from exc
        if not data:
            self._eof()
        self._taken += len(data)
        return data

    async def _fill_large(self) -> None:
        """Read the rest of a large frame straight into its buffer."""
        large = self._large
        assert large is not None
        size, direct = self._large_size, self._direct
        while self._got < size:
            if self._got == len(large):
                _grow(large, size)
            with memoryview(large) as view:
                if direct is not None and (direct.filling or direct.fed == self._taken):
                    # The stream reader holds nothing more of it: the socket reads the
                    # rest of the buffer into place.
                    if not direct.filling:
                        direct.read_into(view[self._got:])
                    self._got += await direct.wait_filled()
                    if self._got < len(large):
                        self._eof()
                    continue
                data = await self._read(min(self._read_size, len(large) - self._got))
                got = self._got
                view[got : got + len(data)] = data
                self._got = got + len(data)
        self._large = None
        # A bytearray: bytes-like for every reader of frames, and not copied again.
        self._frames.append(cast(bytes, large))

    async def close(self) -> None:
        """Close the stream; buffered output gets a short grace to flush."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                try:
                    if self._direct is not None:  # a large frame being written goes first
                        await self._direct.settle()
                finally:
                    self._writer.close()
                await self._writer.wait_closed()
        except Exception:
            # A timeout, or what the stream ended with (a reset, or an error a callback
            # raised, reported where it happened): closed either way.
            self._writer.transport.abort()
