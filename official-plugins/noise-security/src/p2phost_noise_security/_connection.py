"""A connection whose every frame travels as Noise transport messages.

Each frame of the underlying connection is exactly one Noise transport message: the
ChaChaPoly encryption, under the next nonce of its direction, of one or more records.
A record is a 4-byte big-endian header and a piece of a frame; the header holds the
piece's length, with the top bit set when the frame goes on in the next record. So
small frames sent together share one message (one AEAD call, one underlying frame),
and a frame larger than a Noise message (65535 bytes) spans several.

A frame's pieces are never empty, and one of the maximum size needs at most
``3 + max_frame_size // 65515`` of them (the first and last pieces may be small; each
between them fills a message; a sender with a smaller maximum than 65535 bytes makes
smaller messages, but then its frames need 3 at most), so a record that breaks either
rule is malformed and the connection is closed (``ProtocolViolation``). Without the
bound a peer could send millions of tiny pieces, each kept until the frame ends, at
little cost per byte.

Nonces are implicit and in order: a message that was altered, replayed, reordered,
dropped or cut fails authentication, and the connection is closed (``ProtocolViolation``:
the host logs it as a warning).

In push mode (``Connection.push``, through ``LayeredConnection``) each read's messages
are decrypted in the underlying connection's callback and their frames handed on.
"""

from __future__ import annotations

import asyncio
import struct
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    LayeredConnection,
    ProtocolViolation,
    check_frame_size,
)

from ._noise import MAX_MESSAGE, MAX_NONCE, TAGLEN, pack_nonce

_HEADER = struct.Struct("!I")
# (Module names for the per-message paths: no attribute look-up per frame.)
_HSIZE, _pack_header, _unpack_header = _HEADER.size, _HEADER.pack, _HEADER.unpack_from
_MORE = 0x8000_0000
_LENGTH = 0x7FFF_FFFF


class NoiseConnection(LayeredConnection):
    """Frames protected by the transport keys of a finished Noise handshake."""

    def __init__(
        self, inner: Connection, *, send_cipher: ChaCha20Poly1305,
        recv_cipher: ChaCha20Poly1305, remote_peer_id: str, max_frame_size: int,
    ) -> None:
        super().__init__(inner)
        self._encrypt = send_cipher.encrypt
        self._decrypt = recv_cipher.decrypt
        self._send_nonce = 0
        self._recv_nonce = 0
        self._max = max_frame_size
        # Plaintext per message: what fits in a Noise message and in an underlying frame.
        self._room = min(MAX_MESSAGE, max_frame_size) - TAGLEN
        # The largest frame that goes whole in one record of one message.
        self._whole = self._room - _HEADER.size
        self._send_lock = asyncio.Lock()
        # Sends under way (waiting for the lock or the inner connection): try_send
        # leaves the wire to them, so nonces reach it in order.
        self._sending = 0
        # The pieces of a frame that spans several messages, and their bytes so far.
        self._pieces: list[memoryview] = []
        # The most pieces a frame needs, whatever the sender's maximum (see the
        # module's docstring): more is a malformed record, not a large frame.
        self._most_pieces = 3 + max_frame_size // (MAX_MESSAGE - TAGLEN - _HSIZE)
        self._assembled = 0
        self._assembling = False
        self.remote_peer_id = remote_peer_id

    # -- sending -----------------------------------------------------------------------

    def _seal(self, plaintext: bytes) -> bytes:
        nonce = self._send_nonce
        if nonce >= MAX_NONCE:
            raise ConnectionClosed("the Noise send nonce is exhausted; reconnect")
        self._send_nonce = nonce + 1
        encrypt = self._encrypt  # (a local: see try_send)
        return encrypt(pack_nonce(nonce), plaintext, None)


    def _plaintexts(self, frames: list[bytes]) -> list[bytes]:
        """Pack ``frames`` into as few message plaintexts as fit (checking their size)."""
        room, limit, pack, header = self._room, self._max, _HEADER.pack, _HEADER.size
        out: list[bytes] = []
        parts: list[bytes | memoryview] = []
        used = 0
        for frame in frames:
            size = len(frame)
            if used + header + size <= room:  # the common case: it fits whole
                parts.append(pack(size))
                parts.append(frame)
                used += header + size
                continue
            if size > limit:
                check_frame_size(frame, self._max)
            view, offset = memoryview(frame), 0
            while True:
                space = room - used - header
                if space < min(size - offset, 1):  # no room for a header and a byte
                    out.append(b"".join(parts))
                    parts, used = [], 0
                    continue
                take = min(space, size - offset)
                more = offset + take < size
                parts.append(pack(take | _MORE if more else take))
                parts.append(view[offset : offset + take])
                used += header + take
                offset += take
                if not more:
                    break
        if parts:
            out.append(b"".join(parts))
        return out

    async def send(self, frame: bytes) -> None:
        """Encrypt and send one frame."""
        check_frame_size(frame, self._max)
        if len(frame) <= self._whole:
            plaintext = _HEADER.pack(len(frame)) + frame
            self._sending += 1
            try:
                async with self._send_lock:  # nonces must reach the wire in order
                    await self._inner.send(self._seal(plaintext))
            finally:
                self._sending -= 1
            return
        await self.send_many([frame])

    def unsent(self) -> int | None:
        """What the raw connection still holds (sealed frames, handed to it whole)."""
        return self._inner.unsent()

    def partly_received(self) -> int | None:
        """The pieces of a frame assembled so far, and the raw connection's part of the
        next message."""
        inner = self._inner.partly_received()
        return None if inner is None else self._assembled + inner

    def try_send(self, frame: bytes) -> bool:
        """Encrypt and hand over one small frame at once when nothing is being sent."""
        size, nonce = len(frame), self._send_nonce
        if self._sending or size > self._whole or nonce >= MAX_NONCE:
            return False
        # The cipher's method through a local: called as ``self._encrypt(...)`` an
        # instance attribute is looked up the slow way on every call (no specialisation).
        encrypt = self._encrypt
        self._send_nonce = nonce + 1
        if self._inner.try_send(encrypt(pack_nonce(nonce), _pack_header(size) + frame, None)):
            return True
        # Not sent: the message never left this process, so its nonce is used again by
        # the next message (no two messages on the wire share a nonce).
        self._send_nonce = nonce
        return False

    def try_send_many(self, frames: list[bytes]) -> bool:
        """Encrypt small frames that fit in one message together, and hand it over at
        once when nothing is being sent and the inner connection takes it at once."""
        nonce = self._send_nonce
        if not frames:
            return True
        if self._sending or nonce >= MAX_NONCE \
                or sum(map(len, frames)) + len(frames) * _HSIZE > self._room:
            return False  # (more: send_many, which packs them into several messages)
        (plaintext,) = self._plaintexts(frames)
        self._send_nonce = nonce + 1
        if self._inner.try_send(self._encrypt(pack_nonce(nonce), plaintext, None)):
            return True
        # Not sent: as try_send's, its nonce is used again by the next message.
        self._send_nonce = nonce
        return False

    async def send_many(self, frames: list[bytes]) -> None:
        """Encrypt and send several frames, packed into as few messages as fit."""
        plaintexts = self._plaintexts(frames)  # raises FrameTooLarge before sending any
        self._sending += 1
        try:
            async with self._send_lock:
                await self._inner.send_many([self._seal(p) for p in plaintexts])
        finally:
            self._sending -= 1

    # -- receiving: LayeredConnection reads (or takes pushed reads) and calls _open -----

    def frames_received(self, frames: list[bytes]) -> None:
        """Push mode: the common read (one message holding one whole frame) opened and
        handed on here, in one call; any other read as ``LayeredConnection`` does."""
        sink = self._sink
        if len(frames) == 1 and sink is not None and not (
                self._sink_ended or self._frames or self._assembling) \
                and len(message := frames[0]) <= MAX_MESSAGE:
            nonce, decrypt = self._recv_nonce, self._decrypt  # (a local: see try_send)
            try:
                plaintext = decrypt(pack_nonce(nonce), message, None)
            except Exception:  # (an altered message: the general path fails it with
                pass  # the same nonce and closes the connection)
            else:
                self._recv_nonce = nonce + 1
                size = len(plaintext) - _HSIZE
                if size >= 0 and _unpack_header(plaintext)[0] == size:
                    sink.frames_received([plaintext[_HSIZE:]])
                    return
                # Several records (or pieces of a larger frame): split as _open does.
                self._push_opened(sink, self._split, plaintext)
                return
        super().frames_received(frames)

    def _open(self, messages: list[bytes]) -> None:
        """Decrypt and authenticate ``messages`` into frames."""
        frames, decrypt = self._frames, self._decrypt  # (a local: see try_send)
        for message in messages:
            if len(message) > MAX_MESSAGE:  # over Noise's limit: never decrypted
                self._fail(f"is {len(message)} bytes, over the Noise maximum of {MAX_MESSAGE}")
            nonce = self._recv_nonce
            self._recv_nonce = nonce + 1
            try:
                plaintext = decrypt(pack_nonce(nonce), message, None)
            except InvalidTag:
                self._fail(
                    "failed authentication (altered, replayed, reordered or dropped in transit)"
                )
            size = len(plaintext) - _HEADER.size
            if size >= 0 and _HEADER.unpack_from(plaintext)[0] == size and not self._assembling:
                frames.append(plaintext[_HEADER.size :])  # the common case: one whole frame
            else:
                self._split(plaintext)

    def _split(self, plaintext: bytes) -> None:
        offset, end = 0, len(plaintext)
        if end == 0:
            self._fail("carried an empty message")
        unpack, header, append = _HEADER.unpack_from, _HEADER.size, self._frames.append
        while offset < end:
            if end - offset < header:
                self._fail("carried a cut record header")
            (length,) = unpack(plaintext, offset)
            start = offset + header
            offset = start + (length & _LENGTH)
            if offset > end:
                self._fail("carried a record longer than its message")
            if length & _MORE or self._assembling:
                self._assemble(memoryview(plaintext)[start:offset], bool(length & _MORE))
            else:
                append(plaintext[start:offset])

    def _assemble(self, piece: memoryview, more: bool) -> None:
        """Add a piece of a frame that spans several messages (kept as a view of its
        plaintext; the frame is joined once, at its last piece)."""
        if not piece:  # a sender never makes one: it would cost a record and carry nothing
            self._fail("carried an empty piece of a frame (a record of length 0 in a frame "
                       "that spans several records)")
        if len(self._pieces) >= self._most_pieces:
            self._fail(f"carried piece {len(self._pieces) + 1} of a frame, over the "
                       f"{self._most_pieces} a frame of the maximum size "
                       f"({self._max} bytes) needs")
        self._pieces.append(piece)
        self._assembled += len(piece)
        self._assembling = more
        if self._assembled > self._max:
            raise FrameTooLarge(
                f"{self.remote_address} sent a frame of more than {self._max} bytes, "
                "the maximum; connection closed"
            )
        if not more:
            self._frames.append(b"".join(self._pieces))
            self._pieces.clear()
            self._assembled = 0

    def _fail(self, problem: str) -> NoReturn:
        raise ProtocolViolation(
            f"a Noise message from {self.remote_address} {problem}; connection closed"
        )

    async def close(self) -> None:
        """Close the underlying connection. Idempotent."""
        await self._inner.close()
