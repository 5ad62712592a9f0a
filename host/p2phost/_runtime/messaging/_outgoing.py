"""The send side of app messaging: an app's ``send``/``request``/``publish`` as frames.

A message's frame is its envelope header (packed once per kind and topic), its id and
deadline, and the body as the channel's codec encodes it (or a raw body's parts as they
are); a frame over the channel's limit is refused here, before the peer would drop the
connection for it. A request waits for its reply in :class:`PendingRequests`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

from p2phost_sdk import ConnectionClosed, FrameTooLarge, PeerUnavailable, Raw, RequestTimeout

from .._errors import WireError
from ..wire._channel import OWN_FRAME_LIMIT, Channel
from ..wire._envelope import IDS, RAW, TRACED, VERSION, Kind, encode, header_parts
from ..wire._window import FEW, Waiting
from ._pending import FOREVER, LAST_DEADLINE, PendingRequests, timed_out, without_deadline
from ._routes import TraceHook
from ._stats import DeliveryStats, Tally

#: The first two bytes of a traced MESSAGE or REQUEST (the trace context follows the topic).
_TRACED_HEADS = {kind: bytes((VERSION, kind | TRACED)) for kind in (Kind.MESSAGE, Kind.REQUEST)}
# As constants: an enum member looked up on its class costs EnumType's __getattr__ hook.
_MESSAGE, _REQUEST = Kind.MESSAGE, Kind.REQUEST
_time, _join, _pack_ids = time.time, b"".join, IDS.pack
#: The latest deadline the envelope's field holds (Unix milliseconds, 8 bytes).


def _too_large(channel: Channel, what: str, size: int) -> FrameTooLarge:
    """The error for ``what`` (a message on a topic) of ``size`` bytes, over ``channel``'s
    limit, with the fix that fits whose limit it is."""
    # (a peer's announced limit says its fix in the source already, for the outbox's words)
    whose, _, fix = channel.frame_limit_source.partition("; fix: ")
    if not fix:
        fix = "send smaller bodies" if whose != OWN_FRAME_LIMIT else (
            "send smaller bodies, or raise max-frame-size in [node] of the manifest on both "
            "ends (each refuses frames over its own)")
    return FrameTooLarge(f"{what} is {size} bytes, over the maximum frame size of "
                         f"{channel.frame_limit} ({whose})", fix=fix)


class Outgoing(PendingRequests):
    """The dispatcher's send side (a base class of ``Dispatcher``: the per-message path
    reads the dispatcher's attributes as its own, with no call in between)."""

    # Set by Dispatcher.__init__.
    _ids: Iterator[int]
    stats: DeliveryStats
    _tallies: dict[tuple[str, str], Tally]
    _headers: dict[tuple[Kind, str], tuple[bytes, bytes]]
    #: A MESSAGE's header parts by topic alone (``_headers``' for that kind): what
    #: try_send looks up per message, with no (kind, topic) key to build and hash.
    _message_headers: dict[str, tuple[bytes, bytes]]
    #: A REQUEST's, as ``_message_headers`` (for request's inline frame).
    _request_headers: dict[str, tuple[bytes, bytes]]
    tracer: TraceHook | None

    def frame(self, channel: Channel, kind: Kind, message_id: int, topic: str, body: Any,
              deadline: int = 0) -> bytes:
        """An app message as a frame for ``channel`` (its codec, its size limit)."""
        if type(body) is Raw:
            if channel.reads_raw:
                return self._raw_frame(channel, kind, message_id, topic, body, deadline)
            body = body.tobytes()  # a peer that reads codec bodies only: bytes through it
        parts = self._headers.get((kind, topic))
        if parts is None:
            parts = header_parts(kind, topic.encode())
            if len(self._headers) < 4096:
                self._headers[kind, topic] = parts
                if kind is _MESSAGE:
                    self._message_headers[topic] = parts
                elif kind is _REQUEST:
                    self._request_headers[topic] = parts
        trace = b"" if self.tracer is None else self.tracer.outgoing(channel)
        if trace:  # traced: the trace context goes between the topic and the body
            parts = (_TRACED_HEADS[kind], parts[1] + trace)
        body = channel.codec.encode(body)
        try:  # (header_parts' layout, joined inline: no call per message)
            frame = _join((parts[0], _pack_ids(message_id, 0, deadline), parts[1], body))
        except struct.error as exc:
            raise WireError(f"cannot encode envelope: a field is out of range ({exc})") from exc
        if len(frame) > channel.frame_limit:
            raise _too_large(channel, f"a message on {topic!r}", len(frame))
        return frame

    def _raw_frame(self, channel: Channel, kind: Kind, message_id: int, topic: str,
                   body: Raw, deadline: int) -> bytes:
        # The envelope, then the parts as they are: one copy in all, no codec's.
        trace = b"" if self.tracer is None else self.tracer.outgoing(channel)
        head = encode(kind, message_id, topic.encode(), deadline=deadline, content_type=RAW,
                      trace=trace)
        # The exact size (header, topic bytes, content type, trace), refused before the
        # body is joined: a frame over the limit would cost the peer its connection.
        if len(head) + body.nbytes > channel.frame_limit:
            raise _too_large(channel, f"a raw message on {topic!r}", body.nbytes)
        return b"".join((head, *body.parts))

    async def send(self, channel: Channel, topic: str, body: Any) -> None:
        """One message, no reply."""
        frame = self.try_send(channel, topic, body)
        if frame is not None:
            await self.send_frame(channel, topic, frame)

    def try_send(self, channel: Channel, topic: str, body: Any) -> bytes | None:
        """One message, no reply, queued at once if the outbox has room (None); else its
        frame, for :meth:`send_frame` to wait with (the sender's one coroutine a message
        while there is room)."""
        # frame(), inline for the common message (a codec's body, its header packed
        # already; traced or not): one call less per message sent.
        parts = self._message_headers.get(topic) if type(body) is not Raw else None
        if parts is None:
            frame = self.frame(channel, _MESSAGE, next(self._ids), topic, body)
        else:
            head, tail = parts
            if (tracer := self.tracer) is not None and (trace := tracer.outgoing(channel)):
                head, tail = _TRACED_HEADS[_MESSAGE], tail + trace
            encoded = channel.codec.encode(body)
            try:
                frame = _join((head, _pack_ids(next(self._ids), 0, 0), tail, encoded))
            except struct.error as exc:
                raise WireError(
                    f"cannot encode envelope: a field is out of range ({exc})") from exc
            if len(frame) > channel.frame_limit:  # refused as frame() does, not re-encoded
                raise _too_large(channel, f"a message on {topic!r}", len(frame))
        if not channel.try_post(frame):
            return frame
        # stats.message_out inline: the call costs 3% of a one-way message (instructions.py);
        # the channel's tally of the topic: no (topic, peer) key to build and hash.
        tally = channel.tallies.get(topic) \
            or self.stats.tally_of(channel.tallies, topic, channel.peer_id)
        tally.sent += 1
        tally.bytes_sent += len(frame)
        return None

    async def send_frame(self, channel: Channel, topic: str, frame: bytes) -> None:
        """Queue a message's frame that :meth:`try_send` found no room for, waiting."""
        try:
            await channel.send(frame)
        except ConnectionClosed as exc:
            raise PeerUnavailable(f"peer {channel.peer_id}: {exc}") from exc
        self.stats.message_out(topic, channel.peer_id, len(frame))

    async def request(self, channel: Channel, topic: str, body: Any,
                      timeout: float | None) -> Any:
        """One request; the reply's body, or RequestTimeout / RemoteError / PeerUnavailable
        (``timeout`` None or ``math.inf``: no deadline; negative, nan or a non-number:
        UserError)."""
        message_id = next(self._ids)
        seconds = FOREVER if timeout is None else timeout
        try:  # (a bad timeout is told apart once this fails: one comparison per request)
            deadline = int((_time() + seconds) * 1000)
            # (a bool is an int to Python; timeout=True is a mistake, not one second)
            if not 0 <= seconds or deadline > LAST_DEADLINE or seconds.__class__ is bool:
                raise OverflowError
        except (TypeError, ValueError, OverflowError):
            seconds, deadline = without_deadline(seconds)
        # frame(), inline for the common request (a codec's body, its header packed
        # already, not traced), as try_send's for a message: one call less per request.
        parts = self._request_headers.get(topic) \
            if self.tracer is None and type(body) is not Raw else None
        if parts is None:
            frame = self.frame(channel, _REQUEST, message_id, topic, body, deadline)
        else:
            encoded = channel.codec.encode(body)
            frame = _join((parts[0], _pack_ids(message_id, 0, deadline), parts[1], encoded))
            if len(frame) > channel.frame_limit:
                raise _too_large(channel, f"a message on {topic!r}", len(frame))
        clock = self._clock
        if clock is None:
            clock = self._started()
        new_future = self._new_future  # (a local: see Channel.try_post)
        reply: asyncio.Future[Any] = new_future()
        due = clock() + seconds  # (inf: no deadline, never armed)
        peer, window, held = channel.peer_id, channel.window, 0
        self._pending[message_id] = (peer, topic, reply, due, seconds)
        if (self._timer is None and due != FOREVER) or due < self._timer_at:
            self._arm(due)
        # (the sent tally inline, as try_send's)
        tally = channel.tallies.get(topic) or self.stats.tally_of(channel.tallies, topic, peer)
        # A request that cannot go at once waits in the window's line (inline, not in a
        # coroutine of its own: a burst of thousands of requests lines up, and each
        # object more costs the garbage collector, which then walks all of them more
        # often): the window posts its frame once there is room, and this waits for the
        # reply alone.
        waiting: Waiting | None = None
        try:
            # (RequestWindow's room, inline: no call while the window has room)
            if window.waiters or window.sending \
                    or not (window.in_flight < window.size or window.count < FEW):
                waiting = window.line_up(frame, reply, tally)
            else:
                window.in_flight += len(frame)
                window.count += 1
                held = len(frame)
                if not channel.try_post(frame):
                    # (the line waits meanwhile: the requests in it were made after this)
                    window.sending += 1
                    try:
                        await _send_within(channel, frame, due, reply, topic, seconds)
                    finally:
                        window.sending -= 1
                        if not window.sending:
                            window.room()
                tally.sent += 1
                tally.bytes_sent += len(frame)
            return await reply
        except RequestTimeout:
            if waiting is None or waiting.sent:
                raise
            why = _OUTBOX_FULL if waiting.let_in or window.blocked else _WINDOW_FULL
            raise RequestTimeout(f"{timed_out(peer, topic, seconds)}: {why}") from None
        except ConnectionClosed as exc:
            raise PeerUnavailable(f"peer {peer}: {exc}") from exc
        except asyncio.CancelledError:
            if reply.done() and not reply.cancelled():
                reply.exception()  # (failed by the timer as it was cancelled: seen)
            raise
        finally:
            self._pending.pop(message_id, None)
            if held:
                window.leave(held)
            elif waiting is not None:
                window.done_with(waiting)

    async def publish(self, channels: Iterable[Channel], topic: str, body: Any) -> int:
        """One message to each channel whose peer handles ``topic``; how many were sent."""
        message_id, sent = next(self._ids), 0
        frames: dict[tuple[str, int, bool], bytes] = {}
        for channel in channels:
            if topic not in channel.topics:
                continue
            key = (channel.codec.content_type, channel.frame_limit, channel.reads_raw)
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = self.frame(channel, _MESSAGE, message_id, topic, body)
            if not channel.try_post(frame):
                try:
                    await channel.send(frame)
                except ConnectionClosed:
                    continue
            sent += 1
            self.stats.message_out(topic, channel.peer_id, len(frame))
        return sent


#: Why a request that timed out before it was sent waited (in the window's line, or in
#: ``_send_within``).
_WINDOW_FULL = ("it was never sent: the requests to that peer still unanswered filled "
                "this node's window (half its outbox limit, and four requests); give it a "
                "longer timeout, or make fewer requests to that peer at once")
_OUTBOX_FULL = "it was never sent: the peer did not read what waited for it"
_STORE_SLOW = "the medium did not take the stored request in time (it may hold it or not)"


async def _send_within(channel: Channel, frame: bytes, due: float, reply: asyncio.Future[Any],
                       topic: str, timeout: float) -> None:
    """Wait for room in the outbox (or for the medium to store it) for a request's frame
    until the request is due: a congested peer (one that reads slowly, or nothing) must
    not hold back its RequestTimeout, which says why it was not sent."""
    try:
        async with asyncio.timeout_at(due if due != FOREVER else None):
            await channel.send(frame)
    except TimeoutError:
        # (the timer's RequestTimeout is this one, without why; anything else failed
        # the request first, and so did the channel's end in the same turn)
        if reply.done() and not reply.cancelled() \
                and not isinstance(reply.exception(), RequestTimeout):
            await reply
        if channel.ended:
            raise ConnectionClosed(channel.closed_why) from None
        why = _STORE_SLOW if channel.stored else _OUTBOX_FULL
        raise RequestTimeout(f"{timed_out(channel.peer_id, topic, timeout)}: {why}") from None
