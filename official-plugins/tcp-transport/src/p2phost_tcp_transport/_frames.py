"""Splitting the bytes a TCP stream brings into length-prefixed frames.

A frame on the wire is a 4-byte big-endian length and that many bytes. Reads ask the
socket for a large chunk and split every whole frame out of it at once, so a burst of
small frames costs one read.

Large frames (``LARGE`` bytes and over: parts of a Dask array, files) get one buffer,
allocated once their length passed the size limit, filled as the rest arrives (by the
pull path, the push path, or the socket itself: ``_direct``). Frames up to
``POOLED_SIZE`` get a pooled buffer of their size; a larger one's buffer starts at
``GROW_FROM`` and doubles as it fills, so a peer that announces large frames and sends
little of them holds little memory.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NoReturn

from p2phost_sdk import Connection, ConnectionClosed, FrameSink, FrameTooLarge, TransportError

from ._direct import POOLED_SIZE, frame_buffer

_LENGTH = struct.Struct("!I")
#: Frames from this size on are written without a joined copy and read into one buffer.
LARGE = 65536
#: A large frame's buffer starts this big (or the frame's size, if smaller) and doubles
#: whenever what arrived fills it, so it is never more than twice what the peer sent.
GROW_FROM = 1024 * 1024


class FrameReader(Connection):
    """The frame splitting of :class:`~._connection.TcpConnection` (a base class: the
    per-read path reads the connection's state as its own, with no call in between).
    The state is set, and described, in ``TcpConnection.__init__``."""

    _limit: int
    _max: int
    _frames: deque[bytes]
    _partial: bytearray
    _need: int
    _held: bytes
    _large: bytearray | None
    _got: int
    _large_size: int
    _sink: FrameSink | None

    def _split(self, data: bytes, offset: int = 0) -> None:
        end, limit = len(data), self._limit
        while end - offset >= 4:
            (size,) = _LENGTH.unpack_from(data, offset)
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
            self._frames.append(data[offset + 4 : stop])
            offset = stop
        if offset < end:
            self._partial += memoryview(data)[offset:]
            self._need = 4 + _LENGTH.unpack_from(data, offset)[0] if end - offset >= 4 else 4

    def _eof(self, error: BaseException | None = None) -> NoReturn:
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


def _grow(buffer: bytearray, size: int) -> None:
    """Double ``buffer`` (a large frame's, full), up to the frame's ``size``. In place:
    a large block is remapped, not copied, and only the added part is written."""
    buffer.extend(bytes(min(size, 2 * len(buffer)) - len(buffer)))
