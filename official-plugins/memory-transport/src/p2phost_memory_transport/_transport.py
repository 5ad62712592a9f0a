"""Connections between nodes of one process: bounded in-memory pipes of frames.

Listeners are registered by name in this module, so every node in the process can dial
``mem://NAME``. Frames are passed by reference, never copied.

Nodes of one process may run on different event loops, each in its own thread (the
library's blocking nodes do): a listener's accept then runs on the listener's loop, and
a pipe wakes a reader or writer waiting on another loop through that loop
(``call_soon_threadsafe``), never by touching its future from this thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from urllib.parse import urlsplit

from p2phost_sdk import (
    AcceptHandler,
    AddressError,
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    Listener,
    TaskOwner,
    Transport,
    TransportError,
)

_listeners: dict[str, _MemoryListener] = {}
_dialer_numbers = itertools.count(1)


def parse_address(address: str) -> str:
    """The listener name in ``mem://NAME``; AddressError says what is wrong."""
    parts = urlsplit(address)
    if parts.scheme != "mem" or not parts.netloc or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise AddressError(address, "expected mem://NAME, e.g. mem://alice",
                           expected="mem://NAME, e.g. mem://alice")
    return parts.netloc


def _wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` from whichever loop's thread this runs in."""
    loop = waiter.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        if not waiter.done():
            waiter.set_result(None)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Pipe:
    """One direction: at most ``capacity`` frames in flight; the writer waits beyond that."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.frames: deque[bytes] = deque()
        self.closed = False
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()

    def put_nowait(self, frame: bytes) -> bool:
        if self.closed or len(self.frames) >= self.capacity:
            return False
        self._append(frame)
        return True

    async def put(self, frame: bytes) -> None:
        while len(self.frames) >= self.capacity and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                # Looked at again once the waiter is in: a reader on another thread may
                # have taken a frame in between, and woken nobody.
                if len(self.frames) >= self.capacity and not self.closed:
                    await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
        if self.closed:
            raise ConnectionClosed("the memory connection is closed")
        self._append(frame)

    def _append(self, frame: bytes) -> None:
        self.frames.append(frame)
        getter = self._getter
        if getter is not None:
            _wake(getter)

    async def get(self) -> bytes:
        # Frames sent before a close are still delivered, as on a TCP stream.
        while not self.frames:
            if self.closed:
                raise ConnectionClosed("the other end closed the memory connection")
            self._getter = asyncio.get_running_loop().create_future()
            try:
                if not (self.frames or self.closed):  # (again: see put)
                    await self._getter
            finally:
                self._getter = None
        frame = self.frames.popleft()
        if self._putters:
            _wake(self._putters.popleft())
        return frame

    def close(self) -> None:
        self.closed = True
        for waiter in (self._getter, *self._putters):
            if waiter is not None:
                _wake(waiter)


class MemoryConnection(Connection):
    """One end of an in-memory connection."""

    def __init__(self, incoming: _Pipe, outgoing: _Pipe, max_frame_size: int,
                 local_address: str, remote_address: str) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self._max = max_frame_size
        self.local_address = local_address
        self.remote_address = remote_address

    async def send(self, frame: bytes) -> None:
        """Hand one frame to the other end (waits while its pipe is full)."""
        if len(frame) > self._max:
            raise FrameTooLarge(
                f"frame of {len(frame)} bytes is over the maximum of {self._max} bytes"
            )
        await self._outgoing.put(frame)

    def try_send(self, frame: bytes) -> bool:
        """Hand the frame over at once if the pipe has room."""
        return len(frame) <= self._max and self._outgoing.put_nowait(frame)

    async def recv(self) -> bytes:
        """The next frame from the other end."""
        frame = await self._incoming.get()
        if len(frame) > self._max:  # the other end allows bigger frames than this one
            raise FrameTooLarge(f"{self.remote_address} sent a frame of {len(frame)} bytes, "
                                f"over the maximum of {self._max} bytes")
        return frame

    async def close(self) -> None:
        """Close both directions; frames already sent still reach the other end."""
        self._outgoing.close()
        self._incoming.close()
        self._incoming.frames.clear()


class _MemoryListener(Listener):
    def __init__(self, name: str, accept: AcceptHandler, transport: MemoryTransport) -> None:
        self.name = name
        self.accept = accept
        self.transport = transport
        self.addresses = [f"mem://{name}"]
        self.tasks = TaskOwner(f"listener {self.addresses[0]}")
        #: Where the listening node runs: its side of every connection is served there.
        self.loop = asyncio.get_running_loop()

    def connect(self, dialer: MemoryTransport) -> MemoryConnection:
        # Each direction's capacity is set by its receiver, who pays for the buffering.
        to_server, to_client = _Pipe(self.transport.capacity), _Pipe(dialer.capacity)
        client_name = f"mem://{self.name}.dialer-{next(_dialer_numbers)}"
        server_end = MemoryConnection(to_server, to_client, self.transport.max_frame_size,
                                      self.addresses[0], client_name)
        client_end = MemoryConnection(to_client, to_server, dialer.max_frame_size,
                                      client_name, self.addresses[0])
        if self.loop is asyncio.get_running_loop():
            self._spawn_accept(server_end, client_name)
        else:  # a node on another loop dials: the listener's node serves it on its own
            self.loop.call_soon_threadsafe(self._spawn_accept, server_end, client_name)
        return client_end

    def _spawn_accept(self, connection: MemoryConnection, client_name: str) -> None:
        self.tasks.spawn(self._accept(connection), f"accept {client_name}")

    async def _accept(self, connection: MemoryConnection) -> None:
        await self.accept(connection)

    async def close(self) -> None:
        if _listeners.get(self.name) is self:
            del _listeners[self.name]
        await self.tasks.close()


class MemoryTransport(Transport):
    """``mem://NAME``: listeners and connections inside this process."""

    schemes = ("mem",)

    def __init__(self, *, max_frame_size: int = 16 * 1024 * 1024, capacity: int = 1024) -> None:
        self.max_frame_size = max_frame_size
        self.capacity = capacity

    def check_address(self, address: str) -> None:
        """AddressError unless ``address`` is ``mem://NAME``."""
        parse_address(address)

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Register ``mem://NAME`` in this process."""
        name = parse_address(address)
        if name in _listeners:
            raise TransportError(f"cannot listen on {address}: address already in use")
        listener = _MemoryListener(name, accept, self)
        _listeners[name] = listener
        return listener

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Connect to the listener named in ``address`` (immediate, or an error)."""
        listener = _listeners.get(parse_address(address))
        if listener is None:
            raise TransportError(f"cannot reach {address}: no listener of that name in this "
                                 "process")
        return listener.connect(self)
