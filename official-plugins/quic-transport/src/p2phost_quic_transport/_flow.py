"""aioquic's connection with flow control that follows the reader.

aioquic hands every byte to the application as it arrives and doubles the peer's send
window whenever half of it is used, whether or not anything was read: a fast sender and
a slow reader would grow the reader's memory without bound. Here the window a peer gets
on a stream is exactly what the reader allows (:meth:`CreditedQuic.grant`): bytes read
plus a room of at most ``window`` (small until the node has read, see
``QuicStreamConnection._grant``). So a peer can never have more than ``window`` unread
bytes (or one frame, if larger) in this node's memory, and a slow reader slows the
sender, as TCP's receive window does. The connection's limit is the stream's plus the
first credit (``max_stream_data``), for what a peer sends on streams it should not open.

This overrides two private methods of ``aioquic.quic.connection.QuicConnection``; the
plugin pins ``aioquic<2`` and its tests check the bound, so a change there is caught.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream


class CreditedQuic(QuicConnection):
    """A ``QuicConnection`` whose receive windows grow only through :meth:`grant`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credit: dict[int, int] = {}
        self._slack = self._configuration.max_stream_data

    def grant(self, stream_id: int, offset: int) -> None:
        """Let the peer send on ``stream_id`` up to byte ``offset`` (sent with the next
        packet; call the protocol's ``transmit``)."""
        if offset > self._credit.get(stream_id, 0):
            self._credit[stream_id] = offset

    def sent_offset(self, stream_id: int) -> int:
        """How far into ``stream_id`` this end has sent at least once."""
        stream = self._streams.get(stream_id)
        return stream.sender.highest_offset if stream is not None else 0

    def all_acknowledged(self, stream_id: int) -> bool:
        """Whether everything written on ``stream_id``, and its end, reached the peer."""
        stream = self._streams.get(stream_id)
        return stream is None or stream.sender.is_finished

    def _write_connection_limits(self, builder: QuicPacketBuilder,
                                 space: QuicPacketSpace) -> None:
        limit = self._local_max_data
        allowed = sum(self._credit.values()) + self._slack
        if allowed > limit.value:
            limit.value = allowed
        # The parent doubles the limit when half of it is used; with ``used`` hidden it
        # only sends the value set here.
        used, limit.used = limit.used, 0
        try:
            super()._write_connection_limits(builder=builder, space=space)
        finally:
            limit.used = used

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        credit = self._credit.get(stream.stream_id) if stream.stream_id is not None else None
        if credit is not None and credit > stream.max_stream_data_local > 0:
            stream.max_stream_data_local = credit
        # As above: hidden from the parent, the bytes received never double the window.
        receiver = stream.receiver
        seen, receiver.highest_offset = receiver.highest_offset, 0
        try:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = seen
