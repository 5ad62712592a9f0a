"""What the transport conformance kit is given and shares between its tests.

The :class:`TransportCase` a plugin describes its transport with, the
:class:`TransportKit` that opens connected pairs from it, and the small helpers the
tests use: acknowledging receive, sample frames, and a recording push-mode sink.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .._transport import Connection, DeliveredFrame, Transport

#: Seconds any one step of a kit test may take.
TIMEOUT = 10.0


@dataclass(frozen=True)
class TransportCase:
    """What a plugin's tests tell the kit about its transport."""

    #: A new transport whose frames may be at most ``max_frame_size`` bytes (for an
    #: inbox-based medium: of a new node, with a peer id of its own).
    make: Callable[[int], Transport]
    #: A fresh address to listen on (each call may be used once).
    listen_address: Callable[[], str]
    #: An address where nothing listens (dialling it must fail in bounded time), if any.
    unreachable_address: str | None = None
    #: A string that is not an address of this transport at all.
    bad_address: str = "not an address"
    #: Seconds a failed dial may take at most.
    dial_within: float = 5.0
    #: Whether the other end's ``recv`` raises ConnectionClosed after ``close``.
    propagates_close: bool = True
    #: Whether listening twice on one address is refused with TransportError.
    exclusive_listen: bool = True
    #: On an inbox-based medium: an address whose peer id no node uses there.
    unknown_peer_address: str | None = None


class TransportKit:
    """Helpers the kit's tests share: open listener/dialer pairs and clean them up."""

    def __init__(self, case: TransportCase) -> None:
        self.case = case

    @asynccontextmanager
    async def pair(self, *, server_max: int = 16 * 1024 * 1024,
                   client_max: int = 16 * 1024 * 1024) -> AsyncIterator[
                       tuple[Connection, Connection]]:
        """A dialled connection and the listener's end of it."""
        server_transport = self.case.make(server_max)
        client_transport = self.case.make(client_max)
        accepted: asyncio.Queue[Connection] = asyncio.Queue()

        async def accept(connection: Connection) -> None:
            await accepted.put(connection)

        listener = await server_transport.listen(self.case.listen_address(), accept)
        client: Connection | None = None
        server: Connection | None = None
        try:
            async with asyncio.timeout(TIMEOUT):
                client = await client_transport.dial(listener.addresses[0], timeout=TIMEOUT)
                server = await accepted.get()
            yield client, server
        finally:
            for end in (client, server):
                if end is not None:
                    await end.close()
            await listener.close()
            await server_transport.close()
            await client_transport.close()


async def receive(connection: Connection) -> bytes:
    """The next frame, acknowledged as the host does once done with it (media that
    redeliver keep a frame until then: see :class:`p2phost_sdk.DeliveredFrame`)."""
    frame = await connection.recv()
    if isinstance(frame, DeliveredFrame):
        frame.ack()
    return frame


async def close(connection: Connection) -> None:
    await connection.close()


def frames(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 3, 4, 5, 255, 4096, 65536, 100_000]
    return [bytes([i % 256]) * rng.choice(sizes) + i.to_bytes(4, "big") for i in range(count)]


class Sink:
    """A :class:`p2phost_sdk.FrameSink` that keeps what it is handed."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.calls_after_end = 0
        self.ended: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
        self._more = asyncio.Event()

    def frames_received(self, frames: list[bytes]) -> None:
        assert frames, "frames_received was handed no frame"
        if self.ended.done():
            self.calls_after_end += 1
        self.frames.extend(bytes(frame) for frame in frames)
        self._more.set()

    def connection_ended(self, error: Exception) -> None:
        if self.ended.done():
            self.calls_after_end += 1
            return
        self.ended.set_result(error)

    async def until(self, count: int) -> None:
        while len(self.frames) < count:
            self._more.clear()
            await self._more.wait()
