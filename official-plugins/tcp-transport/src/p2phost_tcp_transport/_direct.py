"""The socket's reads, with a way to put a large frame straight into its buffer.

Small frames arrive as asyncio streams have them: into a ``StreamReader`` (one read
splits many frames). When a connection meets a frame of ``LARGE`` bytes or more and
the reader holds nothing more of it, it points the protocol at the rest of the frame's
buffer: the socket then reads into that buffer itself (``recv_into``), with no bytes
object made per read, no copy into the stream's buffer and none out of it.

asyncio's own event loop honours the protocol's buffers (Dask runs its processes on
it). uvloop reads into buffers only for protocols that are not also plain protocols,
as a stream reader's is: on uvloop the frame's buffer is filled from the stream reader,
one copy more, as before.

In push mode (``push``) the bytes go to the connection's callback instead of the stream
reader, and a large frame's direct read reports its end to a callback, not a future.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

_Connected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]
#: Push mode: what a read brought, and the end of the connection (its error, if any).
Received = Callable[[bytes], None]
Ended = Callable[[BaseException | None], None]
# One scratch buffer per thread (per event loop), shared by its connections: what a
# read put there is copied out before the loop reads anything else, and a node with
# many idle (or hostile) connections holds no read buffer for each.
_local = threading.local()
#: What one read of small frames takes at most: as asyncio's own transports read for a
#: plain protocol here before (a flood of small frames is read, and answered, in steps).
SMALL_READ = 65536


def _scratch(size: int) -> memoryview:
    scratch: memoryview | None = getattr(_local, "scratch", None)
    if scratch is None or len(scratch) < size:
        scratch = _local.scratch = memoryview(bytearray(size))
    return scratch[:size]


class DirectProtocol(asyncio.StreamReaderProtocol, asyncio.BufferedProtocol):
    """A stream reader's protocol that reads into buffers it is given."""

    def __init__(self, reader: asyncio.StreamReader, read_size: int,
                 connected: _Connected | None = None) -> None:
        super().__init__(reader, connected)
        self._read_size = min(read_size, SMALL_READ)
        #: Bytes read into the scratch buffer so far (the connection counts what it read).
        self.fed = 0
        #: Bytes handed to the stream reader so far (all of them: on every loop).
        self.received = 0
        #: Whether the loop reads into this protocol's buffers (asyncio's own loop does).
        self.buffered = False
        self._received: Received | None = None
        self._on_end: Ended | None = None
        self._on_filled: Callable[[int], None] | None = None
        self._target: memoryview | None = None
        self._filled = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended: BaseException | None = None

    # -- the transport's side ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """The rest of the large frame when one is being read, else the scratch buffer."""
        self.buffered = True
        target = self._target
        return _scratch(self._read_size) if target is None else target[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        """Count what went into the frame, or hand the scratch's bytes to the reader."""
        target = self._target
        if target is None:
            self.fed += nbytes
            received = self._received  # push mode: straight to the connection
            (self.data_received if received is None else received)(
                bytes(_local.scratch[:nbytes]))
            return
        self._filled += nbytes
        if self._filled == len(target):
            self._target = None
            self._wake()

    def data_received(self, data: bytes) -> None:
        """To the connection in push mode, else to the stream reader."""
        received = self._received
        if received is not None:
            received(data)
            return
        self.received += len(data)
        super().data_received(data)

    def eof_received(self) -> bool:
        """The peer closed: a frame being read directly ends short."""
        self._end(EOFError())
        keep_open = bool(super().eof_received())
        self._ended_push(None)
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: a frame being read directly ends short."""
        self._end(exc or EOFError())
        super().connection_lost(exc)
        self._ended_push(exc)

    def _ended_push(self, exc: BaseException | None) -> None:
        on_end = self._on_end
        if on_end is not None:
            self._on_end = None
            on_end(exc)

    # -- the connection's side ---------------------------------------------------------

    def push(self, received: Received, ended: Ended) -> None:
        """Hand what is read to ``received`` from now on (not to the stream reader,
        which must hold nothing), and the connection's end to ``ended``, once."""
        self._received = received
        self._on_end = ended

    def read_into(self, target: memoryview,
                  filled: Callable[[int], None] | None = None) -> None:
        """Read the next ``len(target)`` bytes into ``target`` (the reader holds none
        of them: every byte fed to it was read). Push mode passes ``filled``, called
        with the bytes it got once the target is full or the connection ended."""
        self._filled = 0
        if self._ended is not None:
            return
        self._target = target
        if filled is not None:
            self._on_filled = filled
            return
        self._waiter = asyncio.get_running_loop().create_future()

    async def wait_filled(self) -> int:
        """Wait until the target is full, or the connection ended; how many bytes it got."""
        if self._waiter is not None:
            await asyncio.shield(self._waiter)  # a cancelled reader comes back for it
            self._waiter = None
        return self._filled

    @property
    def filling(self) -> bool:
        """Whether a target is being filled (a cancelled read left one)."""
        return self._waiter is not None or self._on_filled is not None

    def _wake(self) -> None:
        filled = self._on_filled
        if filled is not None:
            self._on_filled = None
            filled(self._filled)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, exc: BaseException) -> None:
        if self._ended is None:
            self._ended = exc
        self._target = None
        self._wake()


async def open_direct(host: str, port: int, read_size: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, DirectProtocol]:
    """``asyncio.open_connection`` with a :class:`DirectProtocol`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=read_size, loop=loop)
    protocol = DirectProtocol(reader, read_size)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol


async def serve_direct(connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                           Any],
                       host: str, port: int, read_size: int) -> asyncio.Server:
    """``asyncio.start_server`` with a :class:`DirectProtocol` per connection."""
    loop = asyncio.get_running_loop()

    def factory() -> DirectProtocol:
        return DirectProtocol(asyncio.StreamReader(limit=read_size, loop=loop), read_size,
                              connected)

    return await loop.create_server(factory, host, port, reuse_address=True)
