"""A connection carrying a TLS 1.3 session over frames, and frames inside the session.

TLS protects a byte stream, and the underlying connection moves frames, so the two are
layered: the bytes TLS writes are cut into underlying frames as they come (record
boundaries do not matter), and inside the session each of our frames is a 4-byte
big-endian length and that many bytes. Frames sent together become one TLS write, so
small ones share records. Record sequence numbers are implicit: bytes altered,
replayed, reordered, dropped or cut fail the record's authentication, and the
connection is closed (``ProtocolViolation``: the host logs it as a warning). In push
mode (``Connection.push``, through ``LayeredConnection``) each read is decrypted in the
underlying connection's callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from OpenSSL import SSL

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    LayeredConnection,
    P2PHostError,
    ProtocolViolation,
    check_frame_size,
)

_HEADER = struct.Struct("!I")
#: Asked of OpenSSL per read; it returns at most one record (16 KiB) at a time anyway.
_READ_SIZE = 65536


def describe(error: SSL.Error) -> str:
    """OpenSSL's reasons inside ``error``, e.g. ``"sslv3 alert bad certificate"``."""
    reasons = [
        str(entry[2]) for entry in (error.args[0] if error.args else [])
        if isinstance(entry, tuple) and len(entry) == 3
    ]
    return "; ".join(reasons) or type(error).__name__


async def flush(tls: SSL.Connection, inner: Connection, chunk: int) -> None:
    """Send what TLS has written so far, cut into frames of at most ``chunk`` bytes."""
    chunks: list[bytes] = []
    while True:
        try:
            data = tls.bio_read(chunk)
        except SSL.WantReadError:
            break
        chunks.append(data)
        if len(data) < chunk:  # a memory BIO hands over all it has: no need to ask again
            break
    if chunks:
        await inner.send_many(chunks)


class TlsConnection(LayeredConnection):
    """Frames protected by a finished TLS 1.3 session."""

    def __init__(
        self, inner: Connection, tls: SSL.Connection, *, remote_peer_id: str,
        max_frame_size: int, chunk: int,
    ) -> None:
        super().__init__(inner)
        self._tls = tls
        self._max = max_frame_size
        self._chunk = chunk
        self._send_lock = asyncio.Lock()
        # TLS bytes that try_send made but the underlying connection did not take at
        # once: they go out first, under the lock, before any later record.
        self._unsent: list[bytes] = []
        self._flusher: asyncio.Task[None] | None = None
        # try_send takes frames whose record fits in one underlying frame (a TLS 1.3
        # record adds 22 bytes to what it carries).
        self._lone = chunk - _HEADER.size - 64
        self._buffer = bytearray()
        self.remote_peer_id = remote_peer_id

    def try_send(self, frame: bytes) -> bool:
        """Encrypt and hand over one small frame at once when nothing is being sent.

        A lone frame (a request, a reply) then skips the caller's writer task and the
        lock. Once TLS has numbered the record it must go out: if the underlying
        connection cannot take it at once, it is sent by a task of this connection,
        before anything sent later.
        """
        if self._send_lock.locked() or self._unsent or len(frame) > self._lone:
            return False
        tls = self._tls
        try:
            tls.sendall(_HEADER.pack(len(frame)) + frame)
        except SSL.Error:
            return False  # send() reports it
        chunks: list[bytes] = []
        while True:
            try:
                chunks.append(tls.bio_read(self._chunk))
            except SSL.WantReadError:
                break
        if len(chunks) == 1 and self._inner.try_send(chunks[0]):
            return True
        self._unsent = chunks
        self._flusher = asyncio.get_running_loop().create_task(
            self._send_unsent(), name=f"tls flush {self.remote_address}")
        return True

    async def _send_unsent(self) -> None:
        with contextlib.suppress(P2PHostError, OSError):
            async with self._send_lock:
                await self._flush_unsent()

    async def _flush_unsent(self) -> None:
        # Under the send lock.
        if self._unsent:
            chunks, self._unsent = self._unsent, []
            await self._inner.send_many(chunks)

    async def send(self, frame: bytes) -> None:
        """Encrypt and send one frame."""
        check_frame_size(frame, self._max)
        await self._write(_HEADER.pack(len(frame)) + frame)

    async def send_many(self, frames: list[bytes]) -> None:
        """Encrypt and send several frames with one TLS write."""
        parts: list[bytes] = []
        for frame in frames:
            check_frame_size(frame, self._max)
            parts.append(_HEADER.pack(len(frame)))
            parts.append(frame)
        await self._write(b"".join(parts))

    async def _write(self, data: bytes) -> None:
        # Records must reach the wire in the order TLS numbered them.
        async with self._send_lock:
            await self._flush_unsent()
            try:
                self._tls.sendall(data)
            except SSL.Error as exc:
                raise ConnectionClosed(
                    f"TLS session with {self.remote_address} is unusable: {describe(exc)}"
                ) from None
            await flush(self._tls, self._inner, self._chunk)

    def unsent(self) -> int | None:
        """What the underlying connection still holds (TLS records, handed to it as
        they were made) and the records try_send made that wait for it; None where the
        underlying connection cannot tell."""
        inner = self._inner.unsent()
        return None if inner is None else inner + sum(map(len, self._unsent))

    # -- receiving: LayeredConnection reads (or takes pushed reads) and calls _open -----

    def partly_received(self) -> int | None:
        """The decrypted bytes of a frame not yet whole, and the raw connection's part
        of the next record's frame."""
        inner = self._inner.partly_received()
        return None if inner is None else len(self._buffer) + inner

    def _open(self, frames: list[bytes]) -> None:
        """Feed the underlying frames' TLS bytes to the session; split out our frames."""
        buffer, tls = self._buffer, self._tls
        for data in frames:
            if not data:  # carries no TLS bytes (and OpenSSL refuses to take none)
                continue
            tls.bio_write(data)
            try:
                while True:
                    buffer += tls.recv(_READ_SIZE)
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                self._split()  # the frames it sent before its close_notify count
                raise ConnectionClosed(
                    f"{self.remote_address} ended the TLS session; connection closed"
                ) from None
            except SSL.Error as exc:
                self._split()  # as those before a bad record: they were authenticated
                raise ProtocolViolation(
                    f"{self.remote_address} sent bytes that failed TLS ({describe(exc)}: "
                    "altered, replayed, reordered or dropped in transit, or the peer refused "
                    "us); connection closed"
                ) from None
        self._split()

    def _split(self) -> None:
        buffer = self._buffer
        offset, end = 0, len(buffer)
        with memoryview(buffer) as view:
            while end - offset >= _HEADER.size:
                (size,) = _HEADER.unpack_from(view, offset)
                if size > self._max:
                    break
                stop = offset + _HEADER.size + size
                if stop > end:
                    break
                self._frames.append(bytes(view[offset + _HEADER.size : stop]))
                offset = stop
        del buffer[:offset]
        if len(buffer) >= _HEADER.size and _HEADER.unpack_from(buffer)[0] > self._max:
            raise FrameTooLarge(
                f"{self.remote_address} sent a frame of {_HEADER.unpack_from(buffer)[0]} "
                f"bytes, over the maximum of {self._max} bytes; connection closed"
            )

    async def close(self) -> None:
        """Close the underlying connection. Idempotent."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self._inner.close()
