"""Push mode of a TCP connection: each read's whole frames to the host's sink at once.

In push mode (``Connection.push``) the protocol hands each read to the connection in
its ``data_received``, which splits it as the pull path does and hands the whole
frames to the host's sink there and then: no task waits for them. The rest of a large
frame is read by the socket straight into its buffer where the loop allows it, else
copied in from the reads.
"""

from __future__ import annotations

import asyncio
from typing import cast

from p2phost_sdk import FrameSink, TransportError

from ._direct import DirectProtocol
from ._frames import _LENGTH, FrameReader, _grow


class PushMode(FrameReader):
    """The push mode of :class:`~._connection.TcpConnection` (a base class, as
    :class:`~._frames.FrameReader` is)."""

    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    _direct: DirectProtocol | None
    _taken: int
    _closed: bool
    _sink_ended: bool

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
