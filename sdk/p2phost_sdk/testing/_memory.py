"""An in-memory pair of connected :class:`Connection` objects, for tests and kits.

What one end sends the other receives, in order, frame for frame, with the same rules as
a real transport: a frame over the maximum is refused with ``FrameTooLarge``, a sender
waits while the other end has ``capacity`` frames unread (backpressure), frames sent
before a close are still delivered, and then ``recv`` raises ``ConnectionClosed``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

from .._errors import ConnectionClosed
from .._transport import Connection, check_frame_size

_pipe_numbers = itertools.count(1)


class _Direction:
    """The frames travelling one way, with room for ``capacity`` before senders wait."""

    def __init__(self, capacity: int) -> None:
        self.frames: deque[bytes] = deque()
        self.capacity = capacity
        self.eof = False
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()

    async def put(self, frames: list[bytes]) -> None:
        while len(self.frames) >= self.capacity and not self.eof:
            self.writable.clear()
            await self.writable.wait()
        if self.eof:
            raise ConnectionClosed("the other end of the memory pipe is closed")
        self.frames.extend(frames)
        self.readable.set()

    async def get(self) -> bytes:
        while not self.frames:
            if self.eof:
                raise ConnectionClosed("the other end of the memory pipe closed it")
            self.readable.clear()
            await self.readable.wait()
        self.writable.set()
        return self.frames.popleft()

    def close(self) -> None:
        self.eof = True
        self.readable.set()
        self.writable.set()


class PipeConnection(Connection):
    """One end of a :func:`memory_pipe`."""

    def __init__(
        self, inbound: _Direction, outbound: _Direction, *, max_frame_size: int,
        local_address: str, remote_address: str,
    ) -> None:
        self._inbound = inbound
        self._outbound = outbound
        self._max = max_frame_size
        self._closed = False
        self.local_address = local_address
        self.remote_address = remote_address

    def _checked(self, frame: bytes) -> bytes:
        if self._closed:
            raise ConnectionClosed(f"{self.local_address} is closed")
        check_frame_size(frame, self._max)
        # A caller may reuse a bytearray after send returns; a real socket copied it by then.
        return frame if type(frame) is bytes else bytes(frame)

    async def send(self, frame: bytes) -> None:
        """Send one frame."""
        await self._outbound.put([self._checked(frame)])

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames at once."""
        await self._outbound.put([self._checked(frame) for frame in frames])

    async def recv(self) -> bytes:
        """The next frame; ``ConnectionClosed`` once the other end closed and all is read."""
        if self._closed:
            raise ConnectionClosed(f"{self.local_address} is closed")
        return await self._inbound.get()

    async def close(self) -> None:
        """Close both directions. Idempotent."""
        self._closed = True
        self._outbound.close()
        self._inbound.close()


def memory_pipe(
    *, max_frame_size: int = 16 * 1024 * 1024, capacity: int = 1024, name: str = ""
) -> tuple[PipeConnection, PipeConnection]:
    """Two connected in-memory connections ``(a, b)``: what ``a`` sends, ``b`` receives.

    ``capacity`` is how many unread frames each direction holds before the sender waits.
    """
    if capacity < 1:
        raise ValueError("capacity must be at least 1 frame")
    label = name or f"pipe-{next(_pipe_numbers)}"
    a_to_b, b_to_a = _Direction(capacity), _Direction(capacity)
    a = PipeConnection(
        b_to_a, a_to_b, max_frame_size=max_frame_size,
        local_address=f"mem://{label}/a", remote_address=f"mem://{label}/b",
    )
    b = PipeConnection(
        a_to_b, b_to_a, max_frame_size=max_frame_size,
        local_address=f"mem://{label}/b", remote_address=f"mem://{label}/a",
    )
    return a, b
