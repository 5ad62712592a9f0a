"""A channel's receiving side: frames taken from the transport, in order, with room.

Where the connection has a push mode (``Connection.push``: tcp, and the security plugins
over it), the channel is its :class:`p2phost_sdk.FrameSink`: each read's frames are taken
in the transport's ``data_received``, with no task between the socket and the mailbox (a
reply's future is set, a handler's task created there; handler code never runs there).
Other connections are pushed by a task of the channel's, the pump, from ``recv_many``.
A frame that cannot be taken at once (the app's mailbox or this node's outbox is full)
leaves the rest to the reader task, which waits for room, takes them in order and
resumes reading.

Reading pauses only once the frames waiting pass the outbox limit in bytes; until then
the connection is read on, and the answers to this node among them (REPLY, ERROR, ACK,
PONG) are taken at once. Two nodes each waiting for room to answer the other's requests
(the answers wait for room in the outbox, their handlers hold the mailbox) would
otherwise both stop reading, and wait for each other until the write timeout closed the
connection. A peer's requests in flight are bounded (``RequestWindow``: half its outbox
limit), so they fit what waits here; a peer that floods other frames meets the pause.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from p2phost_sdk import Connection, TransportError

from .._errors import WireError
from ._envelope import HEADER, TRACE_SIZE, TRACED, VERSION, Envelope, Kind, decode

if TYPE_CHECKING:
    from ._channel import Channel

#: A frame's acknowledgement, for media that redeliver what was not acknowledged.
Ack = Callable[[], None]
#: Called for MESSAGE and REQUEST envelopes (with the frame's ack, to call once handled);
#: returns an awaitable when the reader must wait (the app's mailbox is full), None when
#: the envelope was taken at once.
OnMessage = Callable[["Channel", Envelope, Ack | None], Awaitable[None] | None]
#: Called for REPLY, ERROR and ACK envelopes.
OnReply = Callable[["Channel", Envelope], None]
#: The reader's fast path for the common MESSAGE or REQUEST (no sender, recipient or
#: content type in its header): ``(channel, kind, message_id, deadline, topic, body,
#: ack)``, the header's fields as locals; otherwise as :data:`OnMessage`.
OnFields = Callable[["Channel", int, int, int, str, bytes, Ack | None],
                    Awaitable[None] | None]
#: The reader's fast path for a REPLY or ERROR: ``(channel, kind, correlation_id, body)``.
OnReplied = Callable[["Channel", int, int, bytes], None]
#: :data:`OnFields` for a MESSAGE or REQUEST carrying a trace context, given last.
OnTraced = Callable[["Channel", int, int, int, str, bytes, Ack | None, bytes],
                    Awaitable[None] | None]


_REQUEST, _ERROR = int(Kind.REQUEST), int(Kind.ERROR)
#: What a reader waiting for room to answer still takes as it comes (see the docstring).
_ANSWERS = frozenset({Kind.REPLY, Kind.ERROR, Kind.ACK, Kind.PONG})
_TRACED_APP = (TRACED | Kind.MESSAGE, TRACED | Kind.REQUEST)
#: What a frame kept in the backlog costs beyond its bytes (the bytes object, its slot):
#: counted, so that a flood of empty frames meets the limit too.
FRAME_COST = 64
_START, _unpack, _monotonic = HEADER.size, HEADER.unpack_from, time.monotonic


class Reader:
    """The receiving half of :class:`~._channel.Channel` (which sets these fields)."""

    # Slots, not a dict: the channel's fields are read per frame (see Channel).
    __slots__ = ("_backlog", "_blocked", "_channel", "_failure", "_held", "_limit",
                 "_on_fields", "_on_replied", "_on_traced", "_outbox_bytes", "_reading",
                 "_stopped", "_topic", "_topic_bytes", "_wrote_directly", "connection",
                 "last_seen", "stalled")

    connection: Connection
    #: This reader's channel (itself), as the callbacks take it.
    _channel: Channel
    #: When the peer was last heard from (``time.monotonic``).
    last_seen: float
    #: True while the reader waits for room in a full mailbox (the peer is not dead).
    stalled: bool
    _wrote_directly: bool
    _outbox_bytes: int
    _limit: int
    _on_fields: OnFields
    _on_replied: OnReplied
    _on_traced: OnTraced | None
    # Push mode: frames taken from the transport's callback wait here behind one that
    # could not be taken at once; the reader task waits on ``_blocked``.
    # (Read by read: each read's frames and their bytes.)
    _backlog: deque[tuple[Sequence[bytes], int]]
    _blocked: asyncio.Future[asyncio.Future[None]] | None
    _failure: Exception | None
    _stopped: bool
    # The bytes of the frames kept in the backlog while reading went on (_behind).
    _held: int
    # Set while reading may go on: what the pump waits for (_pause, _resume).
    _reading: asyncio.Event
    # The topic of the last MESSAGE or REQUEST taken, as it came and as decoded: a frame
    # on the same topic (most of a burst) reuses the string, its hash computed already,
    # with no decode or hash of its own (a comparison of its bytes: bytes.startswith
    # would save the slice but parses its arguments, for as much as it saves).
    _topic_bytes: bytes
    _topic: str

    def _start_reader(self, channel: Channel) -> None:
        self._channel = channel
        self._backlog = deque()
        self._blocked = None
        self._failure = None
        self._stopped = False
        self._held = 0
        self._reading = asyncio.Event()
        self._reading.set()
        self._topic_bytes, self._topic = b"", ""

    def _general(self, envelope: Envelope, ack: Ack | None) -> Awaitable[None] | None:
        """Any other frame (control frames, frames naming their sender...): the channel's."""
        raise NotImplementedError

    async def _await_room(self) -> None:
        """Wait while this node's answers to the peer fill the outbox: the channel's."""
        raise NotImplementedError

    async def _read_loop(self) -> None:
        # Push mode where the transport has it (frames from its protocol's callback, no
        # loop turn between the read and this node's handling); else a task of the
        # channel's pushes what recv_many returns (_pump), until the transport can.
        if self.connection.push(self):
            await self._pushed()
            return
        pump = asyncio.get_running_loop().create_task(self._pump(), name="pump")
        try:
            await self._pushed()
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _pump(self) -> None:
        """Push mode for a connection without one (brokers, memory, quic, websocket), or
        not yet (a security layer holding frames that recv_many must hand over first):
        each ``recv_many`` to :meth:`frames_received`, while reading is not paused."""
        connection, reading = self.connection, self._reading
        try:
            while True:
                if not reading.is_set():
                    await reading.wait()
                self.frames_received(await connection.recv_many())
                if connection.push(self):
                    return  # the transport pushes from now on
        except Exception as exc:  # (ConnectionClosed at the end, ...): the reader raises it
            self.connection_ended(exc)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the reader's own cancellation
            # A transport's read cancelled under it: the channel must end, not stop reading.
            self.connection_ended(TransportError("the connection's read was cancelled"))

    def _pause(self) -> None:
        self.connection.pause_reading()
        self._reading.clear()

    def _resume(self) -> None:
        self.connection.resume_reading()
        self._reading.set()

    def frames_received(self, frames: list[bytes]) -> None:
        """The frames of one read, from the transport's callback (or the pump).

        Each is taken at once (a handler's task is created, a reply's future is set)
        until one must wait (a full mailbox or outbox): then the reader task waits with
        it, and takes the rest in order (``_behind``: reading goes on meanwhile, up to a
        limit). Nothing here raises into the transport: an error ends the channel
        through the reader task, after the frames before it.
        """
        if self._stopped:
            return
        self.last_seen = _monotonic()
        self._wrote_directly = False
        blocked = self._blocked
        try:
            if blocked is None or blocked.done():  # the reader task has frames to take first
                self._behind(frames)
                return
            stopped = self._take(frames)
            if stopped is not None:
                taken, waiting = stopped
                # In a task from now (a rare step: a full mailbox or outbox), so that
                # it runs, or is cancelled, even if the channel ends before the
                # reader task takes it up (or a bad frame behind it fails it).
                blocked.set_result(asyncio.ensure_future(waiting))
                self._behind(frames[taken:])
        except Exception as exc:  # a protocol error: the reader task raises it
            self.connection_ended(exc)

    def _behind(self, frames: Sequence[bytes]) -> None:
        """Push mode: frames that arrive while the reader task waits (for room in the
        outbox or in the app's mailbox): the answers among them are taken now, the rest
        kept in order behind the frame it waits with; reading pauses once they pass the
        outbox limit (each frame counted with FRAME_COST more: empty frames too)."""
        # (A comprehension, then a loop only where a read holds answers: a flood into a
        # full mailbox comes this way, read after read.)
        kept = _not_answers(frames)
        if kept:  # (first: should an answer below be bad, these were before the failure)
            self._keep(kept)
        if len(kept) < len(frames):
            take = self._take
            for at, frame in enumerate(frames):
                if len(frame) > 1 and frame[1] in _ANSWERS:
                    try:
                        take((frame,))  # (an answer never waits: None)
                    except Exception:
                        self._keep_before(frames, at, kept)
                        raise

    def _keep(self, frames: Sequence[bytes]) -> None:
        size = _cost(frames)
        self._backlog.append((frames, size))
        self._held += size
        if self._held > self._limit:
            self._pause()

    def _keep_before(self, frames: Sequence[bytes], at: int, kept: list[bytes]) -> None:
        """A bad answer at ``at``: of what ``_behind`` kept, only the frames before it
        stay (as a reader that was not waiting would have taken those alone)."""
        if not kept:
            return
        _, size = self._backlog.pop()
        self._held -= size
        if before := _not_answers(frames[:at]):
            self._keep(before)

    def connection_ended(self, error: Exception) -> None:
        """Push mode: the connection ended (after the frames before it were taken)."""
        if self._stopped:
            return
        self._stopped = True
        blocked = self._blocked
        if blocked is not None and not blocked.done():
            blocked.set_exception(error)
        else:  # raised once the reader task has taken what came before
            self._failure = error

    async def _pushed(self) -> None:
        # The reader task in push mode: it waits only when a frame could not be taken
        # at once, takes the frames behind it in order, then lets reading go on.
        loop, backlog, take = asyncio.get_running_loop(), self._backlog, self._take
        while True:
            if self._failure is not None:
                raise self._failure
            self._blocked = blocked = loop.create_future()
            try:
                waiting = await blocked
            except asyncio.CancelledError:  # the channel ends: so does what it waited for
                if blocked.done() and not blocked.cancelled() \
                        and blocked.exception() is None:
                    blocked.result().cancel()
                raise
            finally:
                self._blocked = None
            await waiting
            # (Read by read: what is left of one goes back in front, and no more is
            # copied per stop than one read's frames.)
            while backlog:
                frames, size = backlog.popleft()
                self._held -= size
                stopped = take(frames)
                if stopped is not None:
                    taken, waiting = stopped
                    if rest := frames[taken:]:
                        size = _cost(rest)
                        backlog.appendleft((rest, size))
                        self._held += size
                    await waiting
            if self._failure is None:
                self._resume()

    def _take(self, frames: Sequence[bytes]) -> tuple[int, Awaitable[None]] | None:
        """Hand received frames on in order, in one pass: None when each was taken at
        once, else how many were (the last of them the one that must wait) and what to
        wait for (room in the mailbox or the outbox) before the next."""
        channel, on_fields, on_replied = self._channel, self._on_fields, self._on_replied
        on_traced = self._on_traced
        # (the last topic: b"" before the first, "" being its string too)
        known, known_topic = self._topic_bytes, self._topic
        taken = 0
        for frame in frames:
            taken += 1
            # Media that redeliver (brokers) hand DeliveredFrames carrying an ack.
            ack: Ack | None = None if type(frame) is bytes else getattr(frame, "ack", None)
            # The common frame in one pass: the header unpacked into locals, no envelope
            # object (a traced one's too); anything else (control frames, frames naming
            # their sender or recipient, bad ones) is decoded whole, for _general.
            if len(frame) >= _START:
                version, kind, message_id, correlation_id, deadline, ls, lr, lt, lc = \
                    _unpack(frame)
                end = _START + lt
                if kind <= _ERROR and version == VERSION and not (ls or lr or lc) \
                        and end <= len(frame):
                    if kind > _REQUEST:  # a REPLY or ERROR: its topic (none) is not read
                        if ack is not None:
                            ack()
                        on_replied(channel, kind, correlation_id, frame[end:])
                        continue
                    if (raw := frame[_START:end]) == known:
                        topic = known_topic
                    else:
                        topic = self._new_topic(raw)
                        known, known_topic = self._topic_bytes, topic
                    # A request is answered without waiting: read no more of them while
                    # the answers pile up.
                    if kind and self._outbox_bytes >= self._limit:
                        return taken, self._later(functools.partial(
                            on_fields, channel, kind, message_id, deadline, topic,
                            frame[end:], ack))
                    waiting = on_fields(channel, kind, message_id, deadline, topic,
                                        frame[end:], ack)
                    if waiting is not None:
                        return taken, self._stall(waiting)
                    continue
                if kind in _TRACED_APP and version == VERSION and not (ls or lr or lc) \
                        and (at := end + TRACE_SIZE) <= len(frame) and on_traced is not None:
                    # A traced MESSAGE or REQUEST (a tracing node's common frame): the same
                    # fields, the trace context last, with no call more per frame.
                    if (raw := frame[_START:end]) == known:
                        topic = known_topic
                    else:
                        topic = self._new_topic(raw)
                        known, known_topic = self._topic_bytes, topic
                    kind ^= TRACED
                    if kind and self._outbox_bytes >= self._limit:  # (as above: room first)
                        return taken, self._later(functools.partial(
                            on_traced, channel, kind, message_id, deadline, topic, frame[at:],
                            ack, frame[end:at]))
                    waiting = on_traced(channel, kind, message_id, deadline, topic, frame[at:],
                                        ack, frame[end:at])
                    if waiting is not None:
                        return taken, self._stall(waiting)
                    continue
            waiting = self._general(decode(frame), ack)
            if waiting is not None:
                return taken, waiting
        return None

    def _new_topic(self, raw: bytes) -> str:
        """A frame's topic other than the last one's, decoded, and now the last one."""
        try:
            topic = raw.decode()
        except UnicodeDecodeError as exc:
            raise WireError(f"envelope string is not UTF-8: {exc}") from exc
        self._topic_bytes, self._topic = bytes(raw), topic
        return topic

    async def _later(self, call: Callable[[], Awaitable[None] | None]) -> None:
        await self._await_room()
        waiting = call()
        if waiting is not None:
            await self._stall(waiting)

    async def _stall(self, waiting: Awaitable[None]) -> None:
        self.stalled = True
        try:
            await waiting
        finally:
            self.stalled = False


def _not_answers(frames: Sequence[bytes]) -> list[bytes]:
    """``frames`` but the answers (_ANSWERS), in order."""
    try:
        return [frame for frame in frames if frame[1] not in _ANSWERS]
    except IndexError:  # a frame of under 2 bytes: kept, for _take to refuse in turn
        return [frame for frame in frames if len(frame) < 2 or frame[1] not in _ANSWERS]


def _cost(frames: Sequence[bytes]) -> int:
    """What ``frames`` kept in the backlog count (FRAME_COST each beyond their bytes)."""
    return sum(map(len, frames)) + FRAME_COST * len(frames)
