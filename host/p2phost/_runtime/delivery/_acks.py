"""ACK frames: a receiver's word that it took messages of acknowledged topics.

An ACK envelope (kind 4) acknowledges the message id in its correlation id, and as
many more as its body holds: 8-byte big-endian ids, one after another. A receiver
collects what it acknowledges during one loop turn and sends one ACK per peer; while
acknowledgements keep coming, at most one round of ACK frames per millisecond, so a
stream of messages handled one by one costs the receiver one write, and the sender one
frame and one outbox deletion, per millisecond instead of per message.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from .._errors import WireError
from ..messaging._peers import answer_on
from ..wire._channel import Channel
from ..wire._envelope import Envelope, Kind, encode

log = logging.getLogger("p2phost.delivery")

_ID = struct.Struct("!Q")
#: Ids per ACK frame at most (32 KiB of body).
MAX_IDS = 4096
#: Seconds between two rounds of ACK frames at least (the window, 1,000 messages by
#: default, is far from filling in that time).
_CORK = 0.001


def ack_frame(frame_id: int, ids: list[int]) -> bytes:
    """One ACK frame acknowledging ``ids`` (at least one, at most :data:`MAX_IDS`)."""
    return encode(Kind.ACK, frame_id, correlation_id=ids[0],
                  body=b"".join(_ID.pack(i) for i in ids[1:]))


def acked_ids(envelope: Envelope) -> list[int]:
    """The message ids an ACK envelope acknowledges; WireError if its body is malformed."""
    body = envelope.body
    if len(body) % _ID.size:
        raise WireError(f"an ACK body of {len(body)} bytes is not a list of 8-byte ids")
    return [envelope.correlation_id, *(i for (i,) in _ID.iter_unpack(body))]


class AckSender:
    """Sends the acknowledgements of a loop turn, one ACK frame per peer."""

    def __init__(self, next_id: Callable[[], int],
                 reply_channel: Callable[[str], Channel | None]) -> None:
        self._next_id = next_id
        self._reply_channel = reply_channel
        self._pending: dict[str, tuple[Channel | None, list[int]]] = {}
        self._handle: asyncio.Handle | None = None
        self._sent_at = float("-inf")

    def add(self, peer: str, message_id: int, channel: Channel | None) -> None:
        """Acknowledge ``message_id`` to ``peer`` (on ``channel`` while it is open)."""
        entry = self._pending.get(peer)
        if entry is None:
            self._pending[peer] = (channel, [message_id])
        else:
            entry[1].append(message_id)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            if loop.time() >= self._sent_at + _CORK:
                self._handle = loop.call_soon(self.flush)
            else:
                self._handle = loop.call_at(self._sent_at + _CORK, self.flush)

    def flush(self) -> None:
        """Send what is pending now."""
        self._handle = None
        if not self._pending:
            return
        self._sent_at = asyncio.get_running_loop().time()
        pending, self._pending = self._pending, {}
        for peer, (channel, ids) in pending.items():
            if channel is None or channel.ended:
                channel = self._reply_channel(peer)
            elif not channel.usable:
                # Came on a connection being retired (a duplicate, say): the peer may
                # have stopped reading it; acknowledged on the one it keeps, as a reply
                # is (else the message is sent again after the ack timeout).
                channel = answer_on(channel, self._reply_channel(peer))
            if channel is None:
                # Not lost: the sender sends the messages again and they are acknowledged
                # then, as duplicates.
                log.debug("%d acknowledgements to %s wait for it to come back", len(ids), peer)
                continue
            for start in range(0, len(ids), MAX_IDS):
                channel.post(ack_frame(self._next_id(), ids[start:start + MAX_IDS]))

    def close(self) -> None:
        """Send what is pending and stop."""
        if self._handle is not None:
            self._handle.cancel()
        self.flush()
