"""TCP connections that move length-prefixed frames over asyncio streams.

A frame on the wire is a 4-byte big-endian length and that many bytes. Reads ask the
socket for a large chunk and split every whole frame out of it at once, so a burst of
small frames costs one read; writes of several frames are joined into one write.

Large frames (``LARGE`` bytes and over: parts of a Dask array, files) are never joined:
a write hands the length and the frame to the socket as they are, and a read fills one
buffer for the frame, allocated once its length passed the size limit; the socket
reads the rest of the frame straight into it (``_direct``). Frames up to ``POOLED_SIZE``
get a pooled buffer of their size; a larger one's buffer starts at ``GROW_FROM`` and
doubles as it fills, so a peer that announces large frames and sends little of them
holds little memory.

In push mode (``Connection.push``) the protocol hands each read to the connection in
its ``data_received``, which splits it the same way and hands the whole frames to the
host's sink there and then: no task waits for them.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections import deque
from typing import NoReturn, cast

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameSink,
    FrameTooLarge,
    TransportError,
    check_frame_size,
)

from ._direct import POOLED_SIZE, DirectProtocol, frame_buffer
from ._sockets import kernel_unsent, peer_address, tune

_LENGTH = struct.Struct("!I")
_unpack_length, _chain = _LENGTH.unpack_from, itertools.chain.from_iterable
#: How long closing a connection or a listener may wait for the other side.
CLOSE_TIMEOUT = 2.0
#: Frames from this size on are written without a joined copy and read into one buffer.
LARGE = 65536
#: A large frame's buffer starts this big (or the frame's size, if smaller) and doubles
#: whenever what arrived fills it, so it is never more than twice what the peer sent.
GROW_FROM = 1024 * 1024


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
        transport, direct, size = self._transport, self._direct, len(frame)
        if self._closed or size > self._max or transport.is_closing() \
                or transport.get_write_buffer_size() \
                or (direct is not None and (direct._sent is not None or (  # (writing a large one)
                    size >= LARGE and direct.writes_in_place))):
            return False  # (a large frame goes from its own buffer: see send)
        if size >= LARGE:  # the length, then the frame as it is: no joined copy
            transport.write(_LENGTH.pack(size))
            transport.write(frame)
            return True
        transport.write(_LENGTH.pack(size) + frame)
        return True

    def try_send_many(self, frames: list[bytes]) -> bool:
        """Write small frames at once, joined, when the socket's send buffer in user
        space is empty (frames of ``LARGE`` bytes in all go through send_many, which
        writes them from their own buffers)."""
        transport, direct = self._transport, self._direct
        if self._closed or transport.is_closing() or transport.get_write_buffer_size() \
                or (direct is not None and direct._sent is not None):
            return False
        # (The total first: a long burst, refused, costs one pass over its frames.)
        if sum(map(len, frames)) >= LARGE:
            return False
        sizes = list(map(len, frames))
        if max(sizes, default=0) > self._max:
            return False  # (send_many refuses a frame over the maximum, with its error)
        transport.write(b"".join(_chain(zip(map(_LENGTH.pack, sizes), frames, strict=True))))
        return True

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames with one write."""
        # Every step a loop in C (a burst is thousands of small frames): their sizes,
        # the largest checked, each frame's length before it.
        sizes = list(map(len, frames))
        largest = max(sizes, default=0)
        if largest > self._max:
            check_frame_size(frames[sizes.index(largest)], self._max)
        parts = list(_chain(zip(map(_LENGTH.pack, sizes), frames, strict=True)))
        if sum(sizes) >= LARGE:  # the socket takes the pieces as they are: no joined copy
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

    def partly_received(self) -> int:
        """Bytes of the frame under way: a large one's (with what the socket has read
        into its buffer so far), or a small one's that straddles reads."""
        if self._large is None:
            return len(self._partial)
        direct = self._direct
        return self._got + (direct.filled if direct is not None and direct.filling else 0)

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

    def _split(self, data: bytes, offset: int = 0) -> None:
        end, limit = len(data), self._limit
        append, unpack = self._frames.append, _unpack_length  # (locals: once per frame)
        while end - offset >= 4:
            (size,) = unpack(data, offset)
            if size > limit:
                if self._frames and self._sink is None and limit != self._max:
                    self._held = data[offset:]  # pulled: the handshake may lift the cap
                    return
                raise FrameTooLarge(
                    f"{self.remote_address} sent a frame of {size} bytes, over the maximum "
                    f"of {limit} bytes" + ("" if limit == self._max or self._sink else
                                           " accepted before the handshake is done")
                )
            stop = offset + 4 + size
            if stop > end:
                if size >= LARGE:
                    # Its size passed the limit: one buffer for it, filled as it
                    # arrives (no joined copy at the end). Over POOLED_SIZE it grows
                    # with what arrived (_grow): a peer that announces a 16 MiB frame
                    # and trickles costs what it sent, not 16 MiB per connection.
                    self._got = end - offset - 4
                    self._large = frame_buffer(size) if size <= POOLED_SIZE \
                        else bytearray(max(GROW_FROM, self._got))
                    self._large_size = size
                    self._large[: self._got] = memoryview(data)[offset + 4 :]
                    return
                break
            append(data[offset + 4 : stop])
            offset = stop
        if offset < end:
            self._partial += memoryview(data)[offset:]
            self._need = 4 + _LENGTH.unpack_from(data, offset)[0] if end - offset >= 4 else 4

    # -- push mode ---------------------------------------------------------------------

    def push(self, sink: FrameSink) -> bool:
        """Hand each read's whole frames to ``sink`` from the protocol's callback.

        Not while the pull path holds frames or unread bytes (the host reads on and
        asks again), nor on a stream this transport did not open.
        """
        direct, reader = self._direct, self._reader
        if direct is None or self._closed or self._sink is not None or self._frames \
                or self._held or direct.filling or direct.received != self._taken \
                or reader.at_eof() or reader.exception() is not None:
            return False
        self._sink = sink
        direct.push(self._pushed, self._push_ended)
        if self._large is not None:
            self._read_large()
        return True

    def pause_reading(self) -> None:
        """Stop reading the socket (the peer's sends then wait on TCP's window)."""
        transport = cast(asyncio.Transport, self._writer.transport)
        if not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        """Read the socket again."""
        transport = cast(asyncio.Transport, self._writer.transport)
        if not transport.is_closing():
            transport.resume_reading()

    def _pushed(self, data: bytes) -> None:
        # Push mode: one read, from the protocol's data_received.
        sink, frames = self._sink, self._frames
        if sink is None or self._sink_ended:
            return
        # One whole frame and nothing else (a request, its reply): straight to the sink.
        if not (self._partial or frames) and self._large is None and len(data) > 4 \
                and _LENGTH.unpack_from(data)[0] == len(data) - 4 <= self._limit:
            sink.frames_received([data[4:]])
            return
        failure: TransportError | None = None
        try:
            while data:
                if self._large is not None:  # the rest of a large frame, copied in
                    data = self._fill_large_from(data)
                    continue
                partial, start = self._partial, 0
                if partial:
                    # Only what completes the frame (or its length) joins the partial
                    # bytes: the rest of the read is split where it is, not copied
                    # twice more (a read of uvloop's is 256 KiB).
                    start = self._need - len(partial)
                    if len(data) < start:
                        partial += data
                        break
                    partial += memoryview(data)[:start]
                    joined = bytes(partial)
                    partial.clear()
                    self._split(joined)
                    if self._partial or self._large is not None:  # that was the length
                        data = data[start:]
                        continue
                self._split(data, start)
                break
            if self._large is not None:
                self._read_large()
        except TransportError as exc:  # after the frames before it
            self.pause_reading()
            failure = exc
        if frames:
            out = list(frames)
            frames.clear()
            sink.frames_received(out)
        if failure is not None:
            self._push_ended(failure)

    def _fill_large_from(self, data: bytes) -> bytes:
        large = self._large
        assert large is not None
        if self._got == len(large):
            _grow(large, self._large_size)
        take = min(len(large) - self._got, len(data))
        large[self._got : self._got + take] = memoryview(data)[:take]
        self._got += take
        if self._got == self._large_size:
            self._large = None
            self._frames.append(cast(bytes, large))
        return data[take:]

    def _read_large(self) -> None:
        # Where the loop reads into buffers, the socket reads the rest of a large frame
        # straight into it (as the pull path does); elsewhere _pushed copies it in.
        direct, large = self._direct, self._large
        if direct is not None and large is not None and direct.buffered \
                and not direct.filling and self._got < len(large):
            direct.read_into(memoryview(large)[self._got :], self._large_filled)

    def _large_filled(self, got: int) -> None:
        large, sink = self._large, self._sink
        assert large is not None and sink is not None
        self._got += got
        if self._got < len(large):  # cut short: _push_ended says so
            return
        if self._got < self._large_size:
            # Full, not whole: it grows with the next read (not here, where the
            # socket's read still holds a view of it).
            return
        self._large = None
        if not self._sink_ended:
            sink.frames_received([cast(bytes, large)])

    def _push_ended(self, error: BaseException | None) -> None:
        sink = self._sink
        if sink is None or self._sink_ended:
            return
        self._sink_ended = True
        if not isinstance(error, TransportError):
            try:
                self._eof(error)
            except TransportError as exc:
                error = exc
        assert isinstance(error, TransportError)
        sink.connection_ended(error)

    def _eof(self, error: BaseException | None = None) -> NoReturn:
        if self._closed:  # this end closed it (a keepalive timeout): not the peer's doing
            raise ConnectionClosed(f"connection to {self.remote_address} closed by this end")
        if self._partial or self._large is not None:  # not a clean close: a protocol error
            got, need = ((self._got, self._large_size) if self._large is not None
                         else (len(self._partial), self._need))
            raise TransportError(
                f"{self.remote_address} closed the connection in the middle of a frame "
                f"(truncated frame: {got} of {need} bytes)"
            )
        if error is not None and not isinstance(error, EOFError):
            raise ConnectionClosed(f"connection to {self.remote_address} lost: {error}")
        raise ConnectionClosed(f"{self.remote_address} closed the connection")

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


def _grow(buffer: bytearray, size: int) -> None:
    """Double ``buffer`` (a large frame's, full), up to the frame's ``size``. In place:
    a large block is remapped, not copied, and only the added part is written."""
    buffer.extend(bytes(min(size, 2 * len(buffer)) - len(buffer)))
