"""One p2phost connection: one QUIC connection, one bidirectional stream of frames.

The dialler opens stream 0 and writes :data:`PREAMBLE`; after it, both directions carry
frames as on TCP, a 4-byte big-endian length and that many bytes. A clean close ends the
stream (FIN), waits (briefly) until the peer acknowledged everything, then closes the
QUIC connection, so the last frames sent before ``close`` arrive.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.packet import QuicErrorCode

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    TransportError,
    check_frame_size,
)

from ._flow import CreditedQuic

#: What the dialler writes first on stream 0: which protocol, which version.
PREAMBLE = b"p2phost/quic 1\n"
#: The stream every connection uses (the client's first bidirectional stream).
STREAM = 0
_LENGTH = struct.Struct("!I")
_CLOSE_TIMEOUT = 2.0
# Bytes written but not yet sent before ``send`` waits (the sender's half of the bound).
_SEND_BUFFER = 256 * 1024
#: The flow-control credit a peer has before this node read anything (the QUIC transport
#: parameters): the preamble and one frame of 64 KiB, the host's cap before its handshake.
#: A peer that is not through the handshake can make the node hold little more.
FIRST_CREDIT = len(PREAMBLE) + 4 + 64 * 1024


class QuicStreamConnection(Connection):
    """Frames on stream 0 of one QUIC connection."""

    def __init__(self, quic: CreditedQuic, *, max_frame_size: int, window: int,
                 remote_address: str, local_address: str = "",
                 on_ready: Callable[[QuicStreamConnection], None] | None = None) -> None:
        self.quic = quic
        self.protocol = _Protocol(quic, self)
        self.local_address = local_address
        self.remote_address = remote_address
        self._max = max_frame_size
        #: The largest frame accepted now: small until the host's handshake is done.
        self._limit = max_frame_size
        self._window = window
        self._frames: deque[bytes] = deque()
        self._buffer = bytearray()
        self._need = 4  # bytes the frame being assembled needs in all (header included)
        self._consumed = 0  # stream bytes handed to the reader (the preamble included)
        self._granted = FIRST_CREDIT
        # The whole window at once: the host lifted its cap, or read without setting one.
        self._whole = False
        self._capped = False  # the host set a cap (``limit_incoming``)
        self._written = 0
        self._preamble_sent = 0  # of ``_written``: the preamble, not a frame
        self._preamble = on_ready is not None  # an accepted connection waits for it
        self._on_ready = on_ready
        self._waiters: list[asyncio.Future[None]] = []
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._peer_done = False
        self._ended = ""  # why the QUIC connection is over, once it is
        self._error: TransportError | None = None
        self._closed = False
        #: The UDP socket of a dialled connection (accepted ones share their listener's).
        self.udp: asyncio.DatagramTransport | None = None

    # -- events from aioquic ----------------------------------------------------------

    def event(self, event: events.QuicEvent) -> None:
        """React to one event of the QUIC connection."""
        if isinstance(event, events.StreamDataReceived):
            self._data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.HandshakeCompleted):
            if not self._connected.done():
                self._connected.set_result(None)
        elif isinstance(event, events.StreamReset):
            if event.stream_id == STREAM:
                self._peer_done = True
                self._fail(ConnectionClosed(f"{self.remote_address} reset the connection"))
        elif isinstance(event, events.ConnectionTerminated):
            reason = event.reason_phrase or f"error code {event.error_code}"
            self._ended = "closed" if event.error_code == QuicErrorCode.NO_ERROR else reason
            if not self._connected.done() and self._on_ready is None:  # a dialler waits
                self._connected.set_exception(ConnectionClosed(reason))
            self.wake()

    def unreachable(self, exc: Exception) -> None:
        """A network error (ICMP port unreachable) before the handshake finished."""
        if not self._connected.done() and self._on_ready is None:
            self._connected.set_exception(exc)

    def _data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id != STREAM:
            self._fail(TransportError(f"{self.remote_address} opened QUIC stream {stream_id}; "
                                      "a p2phost connection uses stream 0 only"))
            return
        self._buffer += data
        if self._preamble:
            got = bytes(self._buffer[:len(PREAMBLE)])
            if not PREAMBLE.startswith(got):
                self._fail(TransportError(f"{self.remote_address} does not speak p2phost over "
                                          "QUIC (bad preamble)"))
                return
            if len(got) < len(PREAMBLE):
                return
            del self._buffer[:len(PREAMBLE)]
            self._consumed = len(PREAMBLE)
            self._preamble = False
            if self._on_ready is not None:
                self._on_ready(self)
        try:
            self._split()
        except FrameTooLarge as exc:
            self._fail(exc)
            return
        if end:
            self._peer_done = True
            if self._buffer:
                self._fail(TransportError(
                    f"{self.remote_address} closed the connection in the middle of a frame "
                    f"(truncated frame: {len(self._buffer)} of {self._need} bytes)"))
        self._grant()
        self.wake()

    def _split(self) -> None:
        data, offset, limit = self._buffer, 0, self._limit
        end = len(data)
        while end - offset >= 4:
            (size,) = _LENGTH.unpack_from(data, offset)
            if size > limit:
                if limit == self._max:
                    raise self._too_large(size)
                # Over the host's cap: judged when the host asks for it (``recv``), as
                # the handshake may lift the cap first (a peer may send a large message
                # as soon as it has this node's hello). Meanwhile it gets no more credit.
                break
            stop = offset + 4 + size
            if stop > end:
                break
            self._frames.append(bytes(data[offset + 4:stop]))
            offset = stop
        del data[:offset]
        self._need = 4 + _LENGTH.unpack_from(data)[0] if len(data) >= 4 else 4

    def _too_large(self, size: int) -> FrameTooLarge:
        return FrameTooLarge(f"{self.remote_address} sent a frame of {size} bytes, over the "
                             f"maximum of {self._limit} bytes")

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        self.protocol.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                            reason_phrase=str(error)[:200])
        self.wake()

    def _grant(self) -> None:
        # The room beyond what was read grows with what the node has read (doubling each
        # round trip while it reads), up to the window: the host reads only a few small
        # frames of a peer not through its handshake, so such a peer can make the node
        # hold little more than FIRST_CREDIT (tcp holds one capped frame), while a
        # connection in use reaches the whole window within a few round trips.
        room = self._window if self._whole \
            else min(self._window, max(FIRST_CREDIT, self._consumed))
        # The reader waits for the rest of a frame the peer has no credit to send (one
        # larger than the room, or a smaller one the last grant cut): credit now, all
        # the frame needs, if the host's cap lets it in.
        waiting = not self._frames and self._need - 4 <= self._limit \
            and self._consumed + self._need > self._granted
        if waiting:
            room = max(room, self._need)
        allowed = self._consumed + room
        if allowed - self._granted >= room // 2 or (waiting and allowed > self._granted):
            self._granted = allowed
            self.quic.grant(STREAM, allowed)
            self.protocol.transmit_soon()

    def wake(self) -> None:
        """Let every waiting ``send``, ``recv`` and ``close`` look again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    # -- the Connection API -----------------------------------------------------------

    async def connected(self, timeout: float) -> None:
        """Until the handshake finished (raises ConnectionClosed, OSError, TimeoutError)."""
        async with asyncio.timeout(timeout):
            await self._connected

    def open_stream(self) -> None:
        """The dialler's side: open stream 0 with the preamble."""
        self._write(PREAMBLE)
        self._preamble_sent = len(PREAMBLE)
        self.protocol.transmit()

    def _write(self, data: bytes) -> None:
        if self._closed or self._ended or self._error is not None:
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")
        try:
            self.quic.send_stream_data(STREAM, data)
        except (ValueError, RuntimeError) as exc:  # the stream was reset or finished
            raise ConnectionClosed(f"connection to {self.remote_address} is closed") from exc
        self._written += len(data)

    async def _drain(self) -> None:
        self.protocol.transmit_soon()
        while self._written - self.quic.sent_offset(STREAM) > _SEND_BUFFER:
            if self._closed or self._ended or self._error is not None:
                why = self._ended or self._error or "closed by this node"
                raise ConnectionClosed(f"connection to {self.remote_address} ended ({why})")
            await self._wait()

    async def send(self, frame: bytes) -> None:
        """Send one frame (waits while more than 256 KiB are not yet sent)."""
        check_frame_size(frame, self._max)
        self._write(_LENGTH.pack(len(frame)) + frame)
        await self._drain()

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames with one write."""
        parts: list[bytes] = []
        for frame in frames:
            check_frame_size(frame, self._max)
            parts.append(_LENGTH.pack(len(frame)))
            parts.append(frame)
        self._write(b"".join(parts))
        await self._drain()

    def partly_received(self) -> int:
        """Bytes of the frame being assembled (the stream's bytes after the last whole
        frame)."""
        return len(self._buffer)

    def limit_incoming(self, size: int | None) -> None:
        """Refuse incoming frames over ``size`` bytes (None: ``max_frame_size`` again,
        and the whole window at once); a peer gets no flow-control credit beyond its
        room for a frame over it."""
        self._limit = self._max if size is None else min(size, self._max)
        self._whole = size is None
        self._capped = True
        # Even with frames still queued: a frame held back whole behind them gets no
        # more data to split it out, and would wait for the peer's next bytes.
        if self._buffer and self._error is None:
            try:  # a frame held back by the cap, and those behind it
                self._split()
            except FrameTooLarge as exc:
                self._fail(exc)
                return
            self._grant()
            self.wake()

    async def recv(self) -> bytes:
        """The next frame."""
        while not self._frames:
            if self._closed:
                raise ConnectionClosed(f"connection to {self.remote_address} is closed")
            if self._error is not None:
                raise self._error
            if len(self._buffer) >= 4 and self._need - 4 > self._limit:
                self._fail(self._too_large(self._need - 4))  # (the host asks for it)
                continue
            if self._peer_done or self._ended:
                raise ConnectionClosed(f"{self.remote_address} closed the connection"
                                       if self._peer_done or self._ended == "closed" else
                                       f"connection to {self.remote_address} lost: {self._ended}")
            await self._wait()
        frame = self._frames.popleft()
        self._consumed += 4 + len(frame)
        # A reader that never capped frames (not the host's handshake) wants the window.
        self._whole = self._whole or not self._capped
        self._grant()
        return frame

    async def close(self) -> None:
        """End the stream, let the peer acknowledge it (2 s at most), close the connection."""
        if self._closed:
            return
        self._closed = True
        # Both ends end their side and wait for its acknowledgement, so neither sends the
        # connection close before the other has everything. An end that never wrote a frame
        # (a refused handshake: the security plugin failed on the peer's first message) has
        # nothing to deliver: it closes at once. Waiting there for a peer that is gone held
        # the host's report of the failed handshake back up to 2 s, and a node stopped
        # meanwhile never logged it.
        if not self._ended and self._error is None and self._written > self._preamble_sent:
            try:
                self.quic.send_stream_data(STREAM, b"", end_stream=True)
                self.protocol.transmit()
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    while not self.quic.all_acknowledged(STREAM) and not self._ended:
                        await self._wait()
            except (TimeoutError, ValueError, RuntimeError):
                pass
        self.protocol.close()
        self.wake()
        if self.udp is not None:
            # A dialled connection owns its socket. The peer has everything (or gave up):
            # no need to keep the socket through QUIC's closing period (3 probe timeouts).
            self.udp.close()

    async def wait_ended(self, timeout: float) -> None:
        """Until the QUIC connection is over (its closing period included), or ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while not self._ended:
                    await self._wait()
        except TimeoutError:
            pass


class _Protocol(QuicConnectionProtocol):
    """aioquic's datagram protocol, telling its p2phost connection about everything."""

    def __init__(self, quic: CreditedQuic, owner: QuicStreamConnection) -> None:
        super().__init__(quic)
        self.owner = owner
        self.on_event: Callable[[events.QuicEvent], None] | None = None
        self._soon: asyncio.Handle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A dialled connection's socket is connected: send without naming the peer."""
        if transport.get_extra_info("peername") is not None:
            transport = _ConnectedDatagrams(transport)  # type: ignore[assignment]
        super().connection_made(transport)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        """Each event goes to the connection (and the listener, for connection ids)."""
        self.owner.event(event)
        if self.on_event is not None:
            self.on_event(event)

    def transmit(self) -> None:
        """Send what is due, then let waiting senders and closers look again."""
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        super().transmit()
        self.owner.wake()

    def transmit_soon(self) -> None:
        """Transmit once the current burst of sends is written (one flight for many)."""
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self.transmit)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors on a dialled (connected) socket: nothing listens there."""
        self.owner.unreachable(exc)


class _ConnectedDatagrams:
    """A connected datagram transport whose ``sendto`` leaves the address out.

    aioquic names the peer on every send; asyncio accepts that on a connected socket, but
    uvloop (libuv) refuses it with EISCONN, so a dialled connection could never start there.
    """

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def sendto(self, data: bytes, addr: object = None) -> None:
        """Send ``data`` to the connected peer."""
        self._transport.sendto(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)
