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
reader, and a large frame's direct read reports its end to a callback, not a future. On
asyncio's loop a push-mode connection's small reads come as plain ``data_received``
(one ``recv`` of at most ``SMALL_READ`` bytes: no ``get_buffer``, no ``buffer_updated``
and no copy out of a scratch buffer per read; the bounded size keeps each read's bytes
off ``mmap``, which asyncio's default 256 KiB takes per read); the socket reads into
buffers only while a large frame's rest is being read.

Writes of large frames go the other way round: asyncio's socket transport (before
Python 3.12) joins what ``writelines`` is given and copies what the socket did not take
into its own buffer. On asyncio's loop, once the transport holds nothing, the protocol
writes a large frame's pieces from their own buffers with ``os.writev`` instead, and
waits for the socket to take the rest (the transport is not written to meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
from asyncio import selector_events
from collections.abc import Callable, Sequence
from typing import Any, cast

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
#: asyncio's own socket transport (the one whose socket a large frame is written to).
_SOCKET_TRANSPORT = getattr(selector_events, "_SelectorSocketTransport", None)
#: What push mode sets on asyncio's socket transport to choose how it reads (_read_plainly).
_READ_STEPS = ("_read_ready_cb", "_read_ready__data_received", "_read_ready__get_buffer",
               "max_size")
#: Pieces one write of a large frame takes from their buffers (more are joined).
MAX_PIECES = 64


#: Large-frame buffers a thread keeps for reuse, and the size up to which it keeps them
#: (a Dask array crosses as 1 MiB parts: a few buffers serve every part; a thread holds
#: at most about 8 MiB for them).
POOLED = 4
POOLED_SIZE = 2 * 1024 * 1024 + 65536


def frame_buffer(size: int) -> bytearray:
    """A buffer of ``size`` bytes for a large frame: one an earlier frame of that size
    had, once nothing but the thread's pool holds it (no fresh pages for the kernel to
    zero, no zeros written, and likely still in the CPU's cache), else a new one."""
    if size > POOLED_SIZE:
        return bytearray(size)
    pool: collections.deque[bytearray] | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = collections.deque(maxlen=POOLED)
    for buffer in pool:
        # Three references: the pool's, this loop's and the call's own. No frame, view
        # or app holds it any more: it can be filled again.
        if len(buffer) == size and sys.getrefcount(buffer) == 3:
            return buffer
    buffer = bytearray(size)
    pool.append(buffer)  # (the oldest leaves the pool; whoever holds it keeps it)
    return buffer


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
        # The thread's scratch buffer as reads take it, once a read asked for it (a
        # thread-local lookup and a slice per read cost a small read as much again).
        self._scratch: memoryview | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._ended: BaseException | None = None
        # The socket's descriptor when the transport is asyncio's own (else -1), and
        # the pieces of a large frame the socket has not taken yet.
        self._fd = -1
        self._unsent: list[memoryview] = []
        self._sent: asyncio.Future[None] | None = None
        # Writers waiting for the transport's buffer to empty, and its limits before.
        self._emptying = 0
        self._limits = (0, 0)
        #: asyncio's own socket transport, whose way of reading push mode switches.
        self._socket_transport: Any = None
        #: uvloop's tcp transport (push mode sets the protocol on it again).
        self._on_uvloop = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note whether large frames can be written from their own buffers."""
        if type(transport) is _SOCKET_TRANSPORT:
            self._fd = transport.get_extra_info("socket").fileno()
            if all(hasattr(transport, name) for name in _READ_STEPS):
                self._socket_transport = transport
        kind = type(transport)
        self._on_uvloop = (kind.__module__, kind.__name__) == ("uvloop.loop", "TCPTransport")
        self._writes_to = cast(asyncio.WriteTransport, transport)
        super().connection_made(transport)

    # -- the transport's side ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """The rest of the large frame when one is being read, else the scratch buffer."""
        self.buffered = True
        target = self._target
        if target is not None:
            return target[self._filled:]
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = _scratch(self._read_size)
        return scratch

    def buffer_updated(self, nbytes: int) -> None:
        """Count what went into the frame, or hand the scratch's bytes to the reader."""
        target = self._target
        if target is None:
            self.fed += nbytes
            received = self._received  # push mode: straight to the connection
            (self.data_received if received is None else received)(
                bytes(self._scratch[:nbytes]))  # type: ignore[index]  # (get_buffer's)
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

    def _write_ready(self) -> None:
        """The socket has room: write more of the frame; done once it took all."""
        sent = self._sent
        assert sent is not None
        try:
            if not _writev(self._fd, self._unsent):
                return
        except OSError as exc:
            self._stop_writing(exc)
            return
        self._stop_writing(None)

    def _stop_writing(self, exc: BaseException | None) -> None:
        sent, self._sent, self._unsent = self._sent, None, []
        if sent is None:
            return
        self._loop._remove_writer(self._fd)  # type: ignore[attr-defined]
        if sent.done():
            return
        if exc is None:
            sent.set_result(None)
        else:
            sent.set_exception(exc)
            sent.exception()  # a writer that was cancelled is not there to take it

    def eof_received(self) -> bool:
        """The peer closed: a frame being read directly ends short."""
        self._end(EOFError())
        keep_open = bool(super().eof_received())
        self._ended_push(None)
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: a frame being read (or written) directly ends short."""
        self._end(exc or EOFError())
        # Before the transport closes the socket: its descriptor may be reused next.
        self._stop_writing(exc or ConnectionResetError("the connection was closed"))
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
        transport = self._socket_transport
        if transport is not None:
            transport.max_size = self._read_size  # (an attribute of its class)
            # Its reads straight to ``received``, with no call of data_received's between
            # (the transport looks the method up per read).
            self.data_received = received  # type: ignore[method-assign,assignment]
            self.buffered = True  # (the loop reads into buffers: the large frames' rest)
            if self._target is None:
                self._read_plainly(True)
        elif self._on_uvloop:
            # The same on uvloop, which keeps the method it found when the protocol was
            # set: set again, it takes ``received`` (once; it reads as before).
            self.data_received = received  # type: ignore[method-assign,assignment]
            self._writes_to.set_protocol(self)

    def _read_plainly(self, plain: bool) -> None:
        # Push mode on asyncio's socket transport: small reads through data_received,
        # a large frame's rest into its buffer (the transport's read step, chosen per
        # read; set_protocol would choose it by the protocol's class, once).
        transport = self._socket_transport
        if transport is not None and self._received is not None:
            transport._read_ready_cb = (transport._read_ready__data_received if plain
                                        else transport._read_ready__get_buffer)

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
            self._read_plainly(False)
            return
        self._waiter = asyncio.get_running_loop().create_future()

    async def wait_filled(self) -> int:
        """Wait until the target is full, or the connection ended; how many bytes it got."""
        if self._waiter is not None:
            await asyncio.shield(self._waiter)  # a cancelled reader comes back for it
            self._waiter = None
        return self._filled

    async def write_large(self, parts: Sequence[bytes | memoryview]) -> bool:
        """Write ``parts`` (large frames and their lengths) from their own buffers, after
        what the transport holds: no joined copy, none into the transport's buffer.
        False, having written nothing, where that cannot be done (not asyncio's own
        socket transport, too many pieces); OSError when the connection broke."""
        transport = self._writes_to
        if self._fd < 0 or len(parts) > MAX_PIECES:
            return False
        while self._sent is not None or transport.get_write_buffer_size():
            await self.settle()
            await self._emptied()
        if transport.is_closing():
            return False
        unsent = [memoryview(p).cast("B") for p in parts]  # lengths in bytes
        if _writev(self._fd, unsent):
            return True
        self._unsent = unsent
        sent = self._sent = asyncio.get_running_loop().create_future()
        self._loop._add_writer(self._fd, self._write_ready)  # type: ignore[attr-defined]
        await asyncio.shield(sent)  # a cancelled writer leaves the rest going
        return True

    async def settle(self) -> None:
        """Wait until no large frame is being written (a writer that was cancelled
        leaves its frame going: what is written next goes after it)."""
        while self._sent is not None:
            await asyncio.shield(self._sent)

    async def _emptied(self) -> None:
        # Flow control pauses the writer until the transport's buffer is below its low
        # mark: with both marks at 0, until it is empty (the first waiter lowers them,
        # the last one puts them back).
        transport = self._writes_to
        if not transport.get_write_buffer_size():
            return
        if not self._emptying:
            self._limits = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0, low=0)
        self._emptying += 1
        try:
            await self._drain_helper()  # type: ignore[attr-defined]
        finally:
            self._emptying -= 1
            if not self._emptying:
                low, high = self._limits
                transport.set_write_buffer_limits(high=high, low=low)

    @property
    def writes_in_place(self) -> bool:
        """Whether large frames are written from their own buffers (asyncio's loop)."""
        return self._fd >= 0

    @property
    def unsent(self) -> int:
        """Bytes of the large frame being written that the socket has not taken yet."""
        return sum(len(piece) for piece in self._unsent)

    @property
    def filled(self) -> int:
        """Bytes read into the target so far (while :attr:`filling`)."""
        return self._filled

    @property
    def filling(self) -> bool:
        """Whether a target is being filled (a cancelled read left one)."""
        return self._waiter is not None or self._on_filled is not None

    def _wake(self) -> None:
        filled = self._on_filled
        if filled is not None:
            self._on_filled = None
            self._read_plainly(True)
            filled(self._filled)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, exc: BaseException) -> None:
        if self._ended is None:
            self._ended = exc
        self._target = None
        self._wake()


def _writev(fd: int, unsent: list[memoryview]) -> bool:
    """Write what the socket takes of ``unsent`` (dropping what went); True once all did."""
    try:
        n = os.writev(fd, unsent)
    except (BlockingIOError, InterruptedError):
        return False
    while unsent and n >= len(unsent[0]):
        n -= len(unsent.pop(0))
    if n:
        unsent[0] = unsent[0][n:]
    return not unsent  # (after a short write the socket is full: wait until it is not)


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
