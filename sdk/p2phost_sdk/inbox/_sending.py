"""The sending half of an inbox connection: frames numbered into DATA records, at most
a window beyond the peer's last credit, and the records of this side.

:class:`~._connection.InboxConnection` holds the state; this is its sending code, kept
apart so that each module stays readable (the receiving side is the larger).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import ConnectionClosed, FrameTooLarge, TransportError
from .._transport import Connection
from ._record import Record, RecordType, data_records

if TYPE_CHECKING:
    from ._endpoint import Endpoint

#: A window as OPEN (after its dial deadline), ACCEPT and REOPEN carry it.
WINDOW = struct.Struct("!I")


def announced_window(payload: bytes) -> int | None:
    """The window at the start of ``payload`` (ACCEPT, REOPEN; OPEN's after its first 8
    bytes), or None when the peer announced none (an older peer) or announced 0."""
    if len(payload) < WINDOW.size:
        return None
    return WINDOW.unpack_from(payload)[0] or None


class Sending(Connection):
    """Sending frames on an inbox connection (the state is
    :class:`~._connection.InboxConnection`'s)."""

    _endpoint: Endpoint
    connection_id: bytes
    dialler: bool
    _limit: int
    _window: int
    out_epoch: int
    _out_seq: int
    _credited: int
    _credit: asyncio.Event
    send_lock: asyncio.Lock
    swallow_first_frame: bool
    _failure: TransportError | None
    closed: bool
    _remote_closed: str | None

    @property
    def window(self) -> int:
        """Frames this side may have appended beyond the peer's last credit: as far as a
        peer that takes nothing lets it send (and the most its inbox holds of them)."""
        return self._window

    async def append(self, records: list[bytes]) -> None:
        """Append ``records`` to the peer's inbox."""
        raise NotImplementedError

    def _check(self, frame: bytes) -> None:
        if len(frame) > self._limit:
            raise FrameTooLarge(
                f"frame of {len(frame)} bytes is over the maximum of {self._limit} bytes "
                f"{self._endpoint.limit_reason}")

    def _check_open(self) -> None:
        failure = self._failure
        if failure is not None:
            raise type(failure)(str(failure))
        if self.closed:
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")
        if self._remote_closed is not None:
            raise ConnectionClosed(f"{self.remote_address} closed the connection "
                                   f"({self._remote_closed})")

    async def send(self, frame: bytes) -> None:
        """Append one frame to the peer's inbox (waits for flow-control credit)."""
        self._check(frame)
        await self._send([frame])

    async def send_many(self, frames: list[bytes]) -> None:
        """Append several frames in order, in as few round trips as the window allows."""
        for frame in frames:
            self._check(frame)
        await self._send(frames)

    async def _send(self, frames: Sequence[bytes]) -> None:
        self._check_open()
        async with self.send_lock:
            if self.swallow_first_frame and frames:
                self.swallow_first_frame = False
                frames = frames[1:]
            sent = 0
            while sent < len(frames):
                room = await self._room()
                endpoint = self._endpoint
                if endpoint.medium.split_window:
                    room = min(room, max(1, self._window // 2))
                records = data_records(self.dialler, self.connection_id, self.out_epoch,
                                       self._out_seq + 1, endpoint.peer_id,
                                       endpoint.inbox_field, frames[sent:sent + room])
                self._out_seq += len(records)
                await self.append(records)
                sent += len(records)

    async def _room(self) -> int:
        while True:
            self._check_open()
            room = self._window - (self._out_seq - self._credited)
            if room > 0:
                return room
            self._credit.clear()
            await self._credit.wait()

    def announce(self, kind: RecordType) -> bytes:
        """ACCEPT or REOPEN, announcing this end's window."""
        return self.record(kind, payload=WINDOW.pack(self._endpoint.window))

    def record(self, kind: RecordType, seq: int = 0, payload: bytes = b"",
               epoch: int | None = None) -> bytes:
        """An encoded record of this connection from this side."""
        return Record(kind, self.dialler, self.connection_id,
                      self.out_epoch if epoch is None else epoch, seq,
                      self._endpoint.peer_id, payload, self._endpoint.inbox_field).encode()
