"""One Dask comm carried over p2phost messages: what it sends, and what it holds unread.

Every message on topic ``dask-comm`` is a MessagePack list (the body; the node's
msgpack codec carries ``bytes`` as they are)::

    ["o", sid, name]            request: open stream sid to the listener NAME; reply "ok"
    ["m", sid, opener, frames]  one whole Dask message (its frames), when it fits a chunk
    ["h", sid, opener, sizes]   a larger Dask message: its frame sizes; its parts follow
    ["c", sid, opener, reason]  the sender closed the stream

and the parts of a larger message (at most chunk-size bytes each) are raw bodies
(``p2phost_sdk.Raw``: no codec, no copy into a MessagePack body): a 9-byte head, the
stream id (u64) and the opener flag (u8), then the bytes.

``opener`` is 1 when the sender is the side that opened the stream, so the two sides'
stream ids never collide. Frames are Dask's own (``to_frames``): nothing here looks
into them. A large frame is sent as slices of itself (no joined copy). A large message
is received into one buffer of its total size (Dask's own receive buffer, as its TCP
comm reads one): each part is copied into place once, and its frames are slices of
that buffer, so the shards Dask split a large array into (64 MiB each) are merged
again without a copy.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from distributed.protocol.utils import host_array

from p2phost_sdk import ConnectionClosed, FrameTooLarge, P2PHostError, Raw

#: How one stream sends a body to its peer (the node's ``send`` on topic dask-comm).
Send = Callable[[list[Any] | Raw], Awaitable[None]]

OPEN, MESSAGE, HEAD, PART, CLOSE = "o", "m", "h", "p", "c"

Frame = bytes | bytearray | memoryview
_MIN_CHUNK = 1024
_PART_HEAD = struct.Struct("!QB")


def part_body(sid: int, opener: int, data: memoryview) -> Raw:
    """The raw body of one part of a large message."""
    return Raw(_PART_HEAD.pack(sid, opener), data)


def parse_part(body: Frame) -> tuple[int, int, memoryview]:
    """``(sid, opener, data)`` of a part's raw body; ValueError when it is not one."""
    if len(body) < _PART_HEAD.size:
        raise ValueError("dask-comm: a part is shorter than its head")
    sid, opener = _PART_HEAD.unpack_from(body)
    return sid, opener, memoryview(body)[_PART_HEAD.size:]


class Stream:
    """The p2phost side of one Dask comm: ordered whole Dask messages, both ways."""

    def __init__(self, peer: str, sid: int, *, mine: bool, send: Send, chunk: int,
                 limit: int, on_closed: Callable[[Stream, str, bool], None]) -> None:
        self.peer, self.sid, self.mine = peer, sid, mine
        self._send, self._chunk, self._limit = send, chunk, limit
        self._on_closed = on_closed
        self._ready: collections.deque[list[Frame]] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._write_lock = asyncio.Lock()
        #: Why the stream ended (the peer closed it, the peer was lost, ...), or None.
        self.ended: str | None = None
        self._closed = False  # closed by this side: no more reads or writes
        # The large message being received: its frame sizes, its buffer and how many
        # bytes of it arrived.
        self._sizes: list[int] | None = None
        self._filling: memoryview | None = None
        self._offset = 0

    @property
    def key(self) -> tuple[str, int, bool]:
        """How the app finds this stream: (peer, stream id, opened by this side)."""
        return (self.peer, self.sid, self.mine)

    def closed(self) -> bool:
        """Whether nothing more can be read: closed here, or ended with nothing unread."""
        return self._closed or (self.ended is not None and not self._ready)

    # -- receiving ---------------------------------------------------------------------

    def feed(self, op: str, payload: Any) -> None:
        """Take one message of the peer's (``op`` and what follows the opener flag)."""
        if self._closed or self.ended is not None:
            return
        if op == MESSAGE:
            if self._sizes is not None or not isinstance(payload, list):
                raise ValueError("dask-comm: a whole message inside a large one")
            self._deliver([_frame(f) for f in payload])
        elif op == HEAD:
            self._begin(payload)
        elif op == PART:
            self._part(_frame(payload))
        elif op == CLOSE:
            self.end(f"the peer closed the comm ({payload})" if payload else
                     "the peer closed the comm")
        else:
            raise ValueError(f"dask-comm: unknown message kind {op!r}")

    def _begin(self, sizes: Any) -> None:
        if self._sizes is not None:
            raise ValueError("dask-comm: a large message began inside another")
        if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
            raise ValueError("dask-comm: frame sizes are not a list of sizes")
        total = sum(sizes)
        if total > self._limit:
            # Refused before any buffer is allocated: a peer cannot make us reserve it.
            self._abort(f"a Dask message of {total} bytes is over stream-buffer "
                        f"({self._limit} bytes); fix: raise [config.dask-comm] "
                        "stream-buffer in p2phost.toml")
            return
        # Dask's own receive buffer (as its TCP comm's): writable, and not filled with
        # zeros first; one for the whole message, as Dask merges a split array's frames
        # without a copy only when they are adjacent slices of one buffer.
        self._sizes, self._filling, self._offset = list(sizes), host_array(total), 0
        self._complete()

    def _part(self, data: Frame) -> None:
        filling = self._filling
        if filling is None:
            raise ValueError("dask-comm: a part outside a large message")
        end = self._offset + len(data)
        if end > len(filling):
            raise ValueError("dask-comm: a part runs past its message")
        filling[self._offset:end] = data
        self._offset = end
        self._complete()

    def _complete(self) -> None:
        filling, sizes = self._filling, self._sizes
        assert filling is not None and sizes is not None
        if self._offset < len(filling):
            return
        frames: list[Frame] = []
        start = 0
        for size in sizes:
            frames.append(filling[start:start + size])
            start += size
        self._filling, self._sizes = None, None
        self._deliver(frames)

    def _deliver(self, frames: list[Frame]) -> None:
        self._ready.append(frames)
        self._buffered += sum(len(f) for f in frames)
        if self._buffered > self._limit and len(self._ready) > 1:
            self._abort(f"{self._buffered} bytes of Dask messages were left unread, over "
                        f"stream-buffer ({self._limit} bytes)")
            return
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> list[Frame]:
        """The frames of the next Dask message; ``ConnectionClosed`` once it ended."""
        while not self._ready:
            if self._closed or self.ended is not None:
                raise ConnectionClosed(self.ended or "the comm was closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._closed:
            raise ConnectionClosed("the comm was closed")
        frames = self._ready.popleft()
        self._buffered -= sum(len(f) for f in frames)
        return frames

    # -- sending -----------------------------------------------------------------------

    async def write(self, frames: Sequence[memoryview]) -> int:
        """Send one Dask message (its frames, as byte views); the bytes sent."""
        total = sum(f.nbytes for f in frames)
        opener = int(self.mine)
        async with self._write_lock:  # the parts of two messages must not interleave
            self._check_open()
            try:
                if total <= self._chunk:
                    try:
                        await self._send([MESSAGE, self.sid, opener, list(frames)])
                        return total
                    except FrameTooLarge:
                        self._shrink()  # nothing was sent: send it in parts instead
                await self._send([HEAD, self.sid, opener, [f.nbytes for f in frames]])
                for frame in frames:
                    await self._send_parts(frame, opener)
            except P2PHostError as exc:
                if isinstance(exc, ConnectionClosed):
                    raise
                self.end(f"sending failed: {exc}")
                raise ConnectionClosed(f"the comm to {self.peer} broke: {exc}") from exc
        return total

    async def _send_parts(self, frame: memoryview, opener: int) -> None:
        start = 0
        while start < frame.nbytes:
            self._check_open()
            part = frame[start:start + self._chunk]
            try:
                await self._send(part_body(self.sid, opener, part))
            except FrameTooLarge:
                self._shrink()  # the receiver counts bytes, not parts: go on smaller
                continue
            start += part.nbytes

    def _shrink(self) -> None:
        # A medium that carries less than a chunk (NATS: its max_payload, 1 MB by
        # default) refuses the message before sending it; smaller parts then fit.
        if self._chunk <= _MIN_CHUNK:
            raise FrameTooLarge(f"the connection to {self.peer} carries less than "
                                f"{_MIN_CHUNK}-byte parts")
        self._chunk = max(_MIN_CHUNK, self._chunk // 2)

    def _check_open(self) -> None:
        if self._closed or self.ended is not None:
            raise ConnectionClosed(self.ended or "the comm was closed")

    # -- ending ------------------------------------------------------------------------

    def end(self, reason: str, *, tell: bool = False) -> None:
        """The stream is over: what was received can still be read, then reads end.
        ``tell``: this side ended it, so the peer is sent a close."""
        if self.ended is None:
            self.ended = reason
            self._filling, self._sizes = None, None
            self._on_closed(self, reason, tell)
        self._wake()

    def _abort(self, reason: str) -> None:
        self._closed = True
        self._ready.clear()
        self._buffered = 0
        self.end(reason, tell=True)

    def close(self) -> None:
        """Close this side at once (unread messages are dropped); the peer is told."""
        self._closed = True
        self._ready.clear()
        self._buffered = 0
        self.end("", tell=True)


def _frame(value: Any) -> Frame:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError("dask-comm: a frame is not bytes")
    return value
