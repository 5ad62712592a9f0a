"""A channel: one handshaken connection to a peer, with its reader and batched writer.

Senders append encoded frames to the channel's outbox and return at once; one writer
task hands everything queued to the transport in a single ``send_many``, so a burst of
small messages costs one write. A lone frame (a request, its reply) goes straight to
the transport instead, and a long run of frames in one turn of the loop goes in runs
of ``FRAMES_TOGETHER`` as it is queued. The outbox is bounded in bytes: when the
transport cannot keep up (the peer reads slowly), senders wait for room.

The reader never lets this node's answers pile up: when what waits to go out to the
peer (PONGs, ERRORs, replies) is over the limit, it stops reading until there is room,
and a peer that takes nothing written to it for ``write_timeout`` seconds is
disconnected with that reason (progress counts, not how long a whole write takes: a
reader that is slow but steady is served, where the transport can tell its progress).
Frames queued without waiting (``post``) are bounded too: a channel whose queue would
pass twice its limit is closed, not grown. This node's requests in flight to the peer
are bounded by half the limit (``window``): two nodes flooding each other with requests
would otherwise each fill its outbox with its answers and stop reading, each waiting for
the other (see RequestWindow).

Goodbye: a node that closes a channel on purpose first sends GOODBYE (after everything
already queued), meaning "no new messages or requests from me"; replies may still
follow. The side that said goodbye first closes the connection when its work is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable
from typing import Any, ClassVar

from p2phost_sdk import (
    Codec,
    CodecError,
    Connection,
    ConnectionClosed,
    P2PHostError,
    PeerInfo,
    ProtocolViolation,
    TransportError,
)

from .._errors import WireError
from ._envelope import (
    RAW_HELLO,
    Envelope,
    Kind,
    encode,
)
from ._handshake import Handshaken
from ._reader import (
    Ack,
    OnFields,
    OnMessage,
    OnReplied,
    OnReply,
    OnTraced,
    Reader,
)
from ._said import said
from ._window import RequestWindow

__all__ = ["Ack", "Channel", "OnFields", "OnMessage", "OnReplied", "OnReply", "OnTraced"]

log = logging.getLogger("p2phost.node")

_PING = encode(Kind.PING, 0)
_PONG = encode(Kind.PONG, 0)
_FLUSH_GRACE = 1.0
#: Frames queued in a row after which the outbox goes to the transport at once, when it
#: has room (``Connection.try_send_many``), not at the writer's next turn: the answers to
#: many requests in flight (and a burst of messages) leave in runs of this many while
#: the rest are made, so the peer works on them meanwhile. Fewer costs a system call per
#: few frames; more leaves the peer idle (64 requests in flight on uvloop: each node
#: ~97 % busy, against ~60 % with the whole batch at the writer's turn; 32 ~78 %).
FRAMES_TOGETHER = 16
#: The least a frame still arriving must grow per keepalive timeout to count as traffic
#: (``peer_gave``): a steady sender of 4.4 KB/s at the default 15 s gets a 16 MiB frame
#: through (in an hour at most); a trickle of a byte now and then is cut off.
MIN_GROWTH = 65536
#: Whose limit a frame over this node's own maximum meets (FrameTooLarge says it).
OWN_FRAME_LIMIT = "max-frame-size in [node] of p2phost.toml"
#: The goodbye on a duplicate connection that both ends retire (two nodes dialled each
#: other at once): the peer keeps the other one.
DUPLICATE = "duplicate connection (the other one is kept)"


class Channel(Reader):
    """A live connection to one peer, after the handshake."""

    # Slots, not a dict: read per frame sent and received, and with more fields than
    # CPython 3.11 keeps inline (30) a dict's reads cost more than a slot's.
    __slots__ = ("_answer", "_close_reason", "_duplicate_grace", "_flushed", "_handed",
                 "_hard_limit", "_on_message", "_on_reply", "_outbox", "_partly",
                 "_partly_seen", "_reader", "_room", "_taken", "_try_send", "_try_send_many",
                 "_waiting", "_wake", "_watch", "_write_timeout", "_writing", "address",
                 "closing", "codec", "content_type", "ended", "frame_limit",
                 "frame_limit_source", "hello", "info", "initiator", "local_nonce",
                 "peer_done", "peer_id", "pinged", "progress_at", "reads_raw",
                 "remote_reason", "rtt", "run_waiting", "tallies", "topics", "usable",
                 "window")
    #: Whether it carries letters (stored records a medium may deliver again while the
    #: node holds them), not a connection's frames.
    stored: ClassVar[bool] = False

    def __init__(
        self,
        done: Handshaken,
        *,
        address: str,
        initiator: bool,
        local_nonce: str,
        on_message: OnMessage,
        on_reply: OnReply,
        on_fields: OnFields | None = None,
        on_replied: OnReplied | None = None,
        on_traced: OnTraced | None = None,
        outbox_limit: int,
        max_frame_size: int,
        write_timeout: float = 15.0,
        duplicate_grace: float = 5.0,
    ) -> None:
        self.connection: Connection = done.connection
        self.hello = done.hello
        self.peer_id = done.hello.peer_id
        self.codec: Codec = done.codec
        #: The codec's content type, as an attribute of the channel's own: read per
        #: message received (a class attribute read through an instance is a lookup
        #: Python 3.11 does not specialize).
        self.content_type: str = self.codec.content_type
        self.topics = frozenset(done.hello.topics)
        #: The peer reads raw bodies (``p2phost_sdk.Raw``): its hello says so, once.
        self.reads_raw = done.hello.extra.get(RAW_HELLO) == 1
        #: The dispatcher's counters of this peer by topic (each ``DeliveryStats.tally``
        #: of the topic and peer, kept here for up to ``TALLIED_TOPICS`` topics): found
        #: by the topic alone per message sent and received, with no (topic, peer) key
        #: to build and hash.
        self.tallies: dict[str, Any] = {}
        #: The address this channel was dialled at, or where the peer came from.
        self.address = address
        self.initiator = initiator
        self.local_nonce = local_nonce
        self.info = PeerInfo(self.peer_id, address, self.topics, self.codec.content_type,
                             done.security)
        medium_limit = getattr(self.connection, "max_frame_size", None)
        if medium_limit is not None and medium_limit < max_frame_size:
            self.frame_limit = int(medium_limit)
            self.frame_limit_source = f"the message size limit of the medium at {address}"
        else:
            self.frame_limit = max_frame_size
            self.frame_limit_source = OWN_FRAME_LIMIT
        # The peer closes the connection on a frame over its own maximum: refuse such a
        # message here, where only its sender fails, and say whose limit it is.
        announced = done.hello.max_frame_size
        if 0 < announced < self.frame_limit:
            self.frame_limit = announced
            self.frame_limit_source = (
                f"the max-frame-size the peer at {address} announced; fix: send it in "
                "smaller parts, or raise max-frame-size in [node] of that node's p2phost.toml")
        self.last_seen = time.monotonic()
        #: When the peer was last seen taking bytes written to it (``peer_took``: on
        #: transports that report their unsent bytes): a peer that reads is alive.
        self.progress_at = self.last_seen
        #: The last keepalive round trip in seconds (None until a PONG came back), and
        #: when the last PING went out (``p2phost top`` shows the round trip).
        self.rtt: float | None = None
        self.pinged = 0.0
        #: True while the reader waits for room in a full mailbox (the peer is not dead).
        self.stalled = False
        #: We said goodbye: no new messages or requests go out on this channel.
        self.closing = False
        #: The peer sends no new messages: it said goodbye, or the connection ended.
        self.peer_done = asyncio.Event()
        #: Whether new messages and requests may be sent on this channel: neither
        #: ``closing`` nor ``peer_done`` (a plain attribute, read per message sent: it is
        #: cleared wherever either is set).
        self.usable = True
        #: Why the peer said goodbye ("" until it does).
        self.remote_reason = ""
        self.ended = False
        self._on_message = on_message
        self._on_reply = on_reply
        self._on_fields: OnFields = on_fields or (
            lambda channel, kind, message_id, deadline, topic, body, ack: on_message(
                channel, Envelope(Kind(kind), message_id, topic, body, deadline=deadline),
                ack))
        self._on_replied: OnReplied = on_replied or (
            lambda channel, kind, correlation_id, body: on_reply(
                channel, Envelope(Kind(kind), 0, "", body, correlation_id)))
        self._on_traced = on_traced
        self._limit = outbox_limit
        #: This node's requests in flight to the peer, up to half the outbox limit.
        self.window = RequestWindow(outbox_limit / 2, self.try_post)
        # What post() may queue without waiting: room for the control frames and
        # replies already on their way when the outbox fills.
        self._hard_limit = 2 * outbox_limit + 65536
        self._write_timeout = write_timeout
        # How long a retired duplicate waits for this node's own retirement of it (the
        # kept connection joins within the handshake timeout) before its answer.
        self._duplicate_grace = duplicate_grace
        # That late answer's timer, while one waits: cancelled by the answer (the kept
        # connection joined and this node retired the duplicate) or the channel's end,
        # or the loop would hold the ended channel until it fired.
        self._answer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._writing = False
        self._wrote_directly = False
        self._try_send = self.connection.try_send
        self._try_send_many = self.connection.try_send_many
        #: A run of FRAMES_TOGETHER frames waits for the writer's turn (the transport
        #: did not take it at once, or has no ``try_send_many``): whoever queues many
        #: frames in one step of its own (the dispatcher's answers to a batch of
        #: requests) lets the loop turn once, so the writer sends them meanwhile.
        self.run_waiting = False
        # Bytes handed to the connection so far, the most of them seen taken by the peer
        # (handed minus what the transport still holds), and what waited for it at the
        # last look: progress, see peer_took.
        self._handed = self._taken = self._waiting = 0
        # A frame still arriving, at the last look (``peer_gave``): its bytes then, and
        # ``last_seen`` then (a change means it was whole since, and a new one begun).
        self._partly = 0
        self._partly_seen = self.last_seen
        #: The look at a slow write's progress, once the first (``_watch_write``) is due.
        self._watch: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._close_reason: str | None = None
        self._start_reader(self)

    # -- sending ---------------------------------------------------------------------

    def post(self, frame: bytes) -> None:
        """Queue a frame without waiting (control frames and replies); a peer that lets
        the queue pass twice its limit is disconnected."""
        if self.ended:
            return
        # (A frame into an empty outbox always fits: one frame may be larger than the
        # limits, up to the frame size limit, and then waits for nothing else.)
        if self._outbox_bytes + len(frame) > self._hard_limit and self._outbox_bytes \
                and self._overflows(len(frame)):
            self._overflow()
            return
        # A lone frame (a request, a reply) goes straight to the transport when nothing
        # is queued before it: no wait for the writer task. After one such write, the
        # frames that follow (a burst, the replies to a batch of requests) go through
        # the outbox, and the writer joins them into one write; the reader (on what the
        # peer sends next) and the writer (once it has written) allow the next direct
        # write, at no cost per frame (no callback to schedule).
        if not (self._outbox or self._writing or self._wrote_directly) \
                and self._try_send(frame):
            self._wrote_directly = True
            self._handed += len(frame)
            return
        outbox = self._outbox
        if not outbox:
            # The first frame of an empty outbox: the writer is woken, and flush waits,
            # until it is empty again (the frames behind it find both done already).
            self._flushed.clear()
            self._wake.set()
        outbox.append(frame)
        self._outbox_bytes += len(frame)
        if len(outbox) == FRAMES_TOGETHER and not self._writing:
            self._hand_over()

    def _hand_over(self) -> None:
        """The outbox to the transport now, if it takes it at once (see FRAMES_TOGETHER);
        the writer, woken by its first frame, then finds it empty. Asked once per run
        (as the run reaches FRAMES_TOGETHER frames): refused, the writer sends it all,
        and ``run_waiting`` says so until the writer takes it."""
        if self._try_send_many(self._outbox):
            self._handed += self._outbox_bytes
            self._outbox, self._outbox_bytes = [], 0
            self._room.set()
            if self.window.waiters:  # (a request let in waits for room: see RequestWindow)
                self.window.room()
        else:
            self.run_waiting = True

    def _overflows(self, size: int) -> bool:
        # A frame over the limit that send() let into the empty outbox (a large message)
        # waits at its front while the peer reads slowly (its mailbox full): the frames
        # posted behind it (keepalive pings, replies) count without it, as into an empty
        # outbox.
        outbox, queued = self._outbox, self._outbox_bytes
        if outbox and len(outbox[0]) > self._limit:
            queued -= len(outbox[0])
        return bool(queued) and queued + size > self._hard_limit

    def _overflow(self) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = (f"the peer does not read: {self._outbox_bytes} bytes wait to "
                              f"go to it, over twice the outbox limit of {self._limit}")
        log.warning("closing connection to %s (%s): %s", self.peer_id, self.address,
                    self._close_reason)
        if self._reader is not None:
            self._reader.cancel()

    async def _await_room(self) -> None:
        """Wait while this node's answers to the peer fill the outbox (the request that
        waits is not taken meanwhile; see _reader)."""
        loop, since = asyncio.get_running_loop(), time.monotonic()
        try:
            while self._outbox_bytes >= self._limit and not self.ended:
                self._room.clear()
                # Until write_timeout passes from the start of the wait, or from the
                # peer's last progress, with nothing taken (and a quarter more: the
                # writer samples its own write's progress at write_timeout).
                deadline = loop.time() + self._write_timeout * 1.25 \
                    - (time.monotonic() - max(since, self.progress_at))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._room.wait()
                if deadline <= loop.time() and not self.peer_took(pending=True):
                    raise TimeoutError
        except TimeoutError:
            if self._close_reason is None:
                self._close_reason = (f"the peer does not read: nothing it was sent for "
                                      f"{self._write_timeout:g}s was taken "
                                      f"({self._outbox_bytes} bytes wait)")
                log.warning("closing connection to %s (%s): %s", self.peer_id, self.address,
                            self._close_reason)
            raise ConnectionClosed(self._close_reason) from None

    def try_post(self, frame: bytes) -> bool:
        """Queue a frame if the outbox has room."""
        # A lone frame (a request, its reply) straight to the transport as post would
        # send it, with no call in between: this is the round trip's path.
        outbox = self._outbox
        if outbox:  # behind queued frames (most of a burst): post's last step only
            # (Room as _over has it, inline: one call less per message; frames are never
            # empty, so bytes wait whenever frames do.)
            waiting = self._outbox_bytes
            if waiting >= self._limit or self.ended \
                    or waiting + len(frame) > self._hard_limit:
                return False
            outbox.append(frame)
            self._outbox_bytes = waiting + len(frame)
            if len(outbox) == FRAMES_TOGETHER and not self._writing:
                self._hand_over()
            return True
        # (The method as a local first: a call of an attribute that holds a bound method
        # is a lookup Python 3.11 does not specialize.)
        try_send = self._try_send
        if not (self._writing or self._wrote_directly or self.ended) and try_send(frame):
            self._wrote_directly = True
            self._handed += len(frame)
            return True
        waiting = self._outbox_bytes
        if waiting >= self._limit or self.ended \
                or (waiting and waiting + len(frame) > self._hard_limit):
            return False
        self.post(frame)
        return True

    def _over(self, size: int) -> bool:
        # A frame larger than the slack (up to the frame size limit) waits for an
        # empty outbox rather than pass twice the limit.
        return self._outbox_bytes + size > self._hard_limit and self._outbox_bytes > 0

    async def send(self, frame: bytes) -> None:
        """Queue a frame, waiting for room; ConnectionClosed once the channel ended."""
        while (self._outbox_bytes >= self._limit or self._over(len(frame))) \
                and not self.ended:
            self._room.clear()
            await self._room.wait()
        if self.ended:
            raise ConnectionClosed(self.closed_why)
        self.post(frame)

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued was handed to the transport; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._flushed.wait()
        except TimeoutError:
            return False
        return True

    def ping(self) -> None:
        """Send a keepalive ping."""
        self.pinged = time.monotonic()
        self.post(_PING)

    def goodbye(self, reason: str) -> None:
        """Say goodbye (once): no new messages or requests will go out on this channel."""
        if self._answer is not None:  # this is the answer a retired duplicate waited for
            self._answer.cancel()
            self._answer = None
        if self.closing:
            return
        self.closing = True
        self.usable = False
        self.post(encode(Kind.GOODBYE, 0, body=reason.encode()))

    async def _write_loop(self) -> None:
        connection, wake = self.connection, self._wake
        loop, timeout = asyncio.get_running_loop(), self._write_timeout
        while True:
            await wake.wait()
            wake.clear()
            self._writing = True
            try:
                while self._outbox:
                    frames, size = self._outbox, self._outbox_bytes
                    self._outbox, self._outbox_bytes = [], 0
                    self.run_waiting = False
                    self._room.set()
                    if self.window.waiters:
                        self.window.room()
                    # Bounded as the answers' wait is (_await_room): a peer that takes
                    # nothing for write_timeout is gone, even one that keeps talking (so
                    # the keepalive hears it) while every send to it would wait forever.
                    # Cancelled only once the peer took nothing for write_timeout (a
                    # write cancelled earlier could lose frames not handed over yet).
                    self._handed += size
                    if connection.try_send_many(frames):
                        continue  # taken at once: no write to time (no timer per write)
                    async with asyncio.timeout(None) as limit:
                        watch = loop.call_later(timeout, self._watch_write, limit)
                        try:
                            if len(frames) == 1:
                                await connection.send(frames[0])
                            else:
                                await connection.send_many(frames)
                        finally:
                            watch.cancel()
                            if self._watch is not None:
                                self._watch.cancel()
                                self._watch = None
            except TimeoutError:
                if self._close_reason is None:
                    self._close_reason = (f"the peer does not read: a write to it was not "
                                          f"taken for {self._write_timeout:g}s")
                    log.warning("closing connection to %s (%s): %s", self.peer_id,
                                self.address, self._close_reason)
                raise ConnectionClosed(self._close_reason) from None
            finally:
                self._writing = False
                self._wrote_directly = False
            self._flushed.set()

    @property
    def closed_here(self) -> bool:
        """Whether this node began closing the connection (``close``, or a peer that
        does not read): the keepalive leaves it to end."""
        return self._close_reason is not None

    @property
    def closed_why(self) -> str:
        """What a send on the ended channel fails with: closed, and why if known."""
        why = f" ({self._close_reason})" if self._close_reason else ""
        return f"connection to {self.peer_id} is closed{why}"

    @property
    def writing(self) -> bool:
        """Whether a write to the peer is under way (its own timeout judges the peer)."""
        return self._writing

    def peer_took(self, *, pending: bool = False) -> bool:
        """Whether the peer took some of what waited for it at the last look (or, with
        ``pending``, of a write still under way): then ``progress_at`` is now. A slow
        reader, whose answers wait behind what it reads. Bytes that went when nothing
        waited are no sign (a peer's kernel takes a few while the peer reads nothing),
        nor is anything where the transport cannot tell (``Connection.unsent``); bytes
        taken while others still wait are, at the first look too."""
        unsent = self.connection.unsent()
        if unsent is None:
            return False
        taken, waited, self._waiting = self._handed - unsent, self._waiting, unsent
        if taken <= self._taken:
            return False
        self._taken = taken
        if not (waited or pending or unsent):
            return False
        # Bytes waiting at the first look count too, with a whole timeout to take more: a
        # large write can end before its own timeout looked at it, leaving megabytes in
        # the kernel for a slow reader (loopback takes 4 MB) that reads in bursts.
        self.progress_at = time.monotonic()
        return True

    def peer_gave(self) -> bool:
        """Whether a frame still arriving grew by ``MIN_GROWTH`` bytes or more since the
        last look (called about once per keepalive timeout): then ``last_seen`` is now.
        A slow but steady sender of a large frame is alive; one that stalls, or trickles
        a byte now and then, is not. Asked only of a silent channel, so it costs nothing
        per frame; never where the transport cannot tell (``partly_received``)."""
        got = self.connection.partly_received()
        if got is None:
            return False
        since = self._partly if self._partly_seen == self.last_seen else 0
        self._partly = got
        if got - since < MIN_GROWTH:
            self._partly_seen = self.last_seen
            return False
        self.last_seen = self._partly_seen = time.monotonic()
        return True

    def _watch_write(self, limit: asyncio.Timeout) -> None:
        """write_timeout into a write: on while the peer takes some of it (a slow but
        steady reader, looked at every write_timeout), else the write times out (at
        once where the transport cannot tell). A peer that takes nothing is so cut off
        one to two write_timeouts after it stopped."""
        if self.peer_took(pending=True):
            self._watch = asyncio.get_running_loop().call_later(
                self._write_timeout, self._watch_write, limit)
        else:
            limit.reschedule(asyncio.get_running_loop().time())

    # -- receiving -------------------------------------------------------------------

    def _general(self, envelope: Envelope, ack: Ack | None) -> Awaitable[None] | None:
        kind = envelope.kind
        if (kind is Kind.REQUEST or kind is Kind.PING) and self._outbox_bytes >= self._limit:
            return self._later(functools.partial(self._envelope, envelope, ack))
        return self._envelope(envelope, ack)

    def _envelope(self, envelope: Envelope, ack: Ack | None) -> Awaitable[None] | None:
        kind = envelope.kind
        if kind <= Kind.REQUEST:
            waiting = self._on_message(self, envelope, ack)
            return None if waiting is None else self._stall(waiting)
        if ack is not None:
            ack()
        if kind <= Kind.ACK:
            self._on_reply(self, envelope)
        elif kind is Kind.PING:
            self.post(_PONG)
        elif kind is Kind.PONG and self.pinged:
            self.rtt = time.monotonic() - self.pinged
        elif kind is Kind.GOODBYE:
            # Cut here, once: the reason is logged, kept with the peer and shown (peers).
            self.remote_reason = said(envelope.body) or "goodbye"
            log.debug("%s said goodbye: %s", self.peer_id, self.remote_reason)
            self.usable = False
            self.peer_done.set()
            # A retired duplicate is answered by this node's own retirement of it, once
            # the connection the peer keeps has joined here (the node's peer table):
            # the peer closes it when we answer, and until the kept one joins it is
            # this node's only connection to the peer (its loss would end the peer).
            # Should none join within the handshake timeout (its handshake failed here, or
            # the peer has no other), it is answered then: the peer no longer looks as if
            # it were replacing it (Peer.replacing), and sends to it fail at once.
            if self.remote_reason != DUPLICATE:
                self.goodbye("goodbye")
            elif not self.closing and self._answer is None:
                # (None needed once this node answered; one at most: a peer repeating
                # its goodbye would leave a timer per frame on the loop.)
                self._answer = asyncio.get_running_loop().call_later(
                    self._duplicate_grace, self.goodbye, "goodbye")
        elif kind is Kind.HELLO:
            raise WireError("a second hello on an open connection")
        return None

    # -- lifetime --------------------------------------------------------------------

    async def run(self) -> str:
        """Read and write until the connection ends; returns why it ended."""
        writer = asyncio.get_running_loop().create_task(self._write_loop(),
                                                        name=f"writer {self.peer_id[:12]}")
        reader = self._reader = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"reader {self.peer_id[:12]}")
        reason = ""
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            # The reader's failure is the cause when it has one; a writer's error is kept
            # when the reader ended cleanly beside it (review: it was dropped as "closed").
            failed = reader if reader in done and (writer not in done or _raised(reader)) \
                else writer
            exc = None if failed.cancelled() else failed.exception()
            if failed is writer and isinstance(exc, ConnectionClosed) \
                    and self._close_reason is None and not reader.done():
                # Closed under the writer, by no one here: by the reader, which says why
                # at once (a security layer closes the connection on a tampered frame,
                # then raises), or by the peer, which the reader hears as soon.
                await asyncio.wait({reader}, timeout=_FLUSH_GRACE)
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                failed, exc = reader, reader.exception()  # the cause, not the symptom
            # Closed by the peer, or by this node (the keepalive, say: a frame it cut short
            # is not the peer's protocol error). A protocol violation closes it too, yet it
            # is the peer's fault (or an attacker's on the path): a warning below, as any
            # other protocol error.
            if (isinstance(exc, ConnectionClosed) and not isinstance(exc, ProtocolViolation)) \
                    or (self._close_reason is not None and isinstance(exc, TransportError)):
                reason = self._close_reason or (
                    f"the peer said goodbye ({self.remote_reason})"
                    if self.remote_reason else str(exc))
            elif isinstance(exc, (WireError, CodecError, TransportError, P2PHostError)):
                reason = f"protocol error: {exc}"
                log.warning("closing connection to %s (%s): %s", self.peer_id, self.address,
                            reason)
                if failed is reader and not writer.done():
                    # Tell the peer why, so its log says it too.
                    self.closing = True
                    self.usable = False
                    self.post(encode(Kind.GOODBYE, 0, body=reason.encode()))
                    await self.flush(_FLUSH_GRACE)
            elif exc is not None:
                reason = f"internal error: {type(exc).__name__}: {exc}"
                log.error("connection to %s failed", self.peer_id, exc_info=exc)
            else:
                reason = self._close_reason or "closed"
        finally:
            self._end()
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            with contextlib.suppress(P2PHostError, OSError):
                await self.connection.close()
        return reason

    def _end(self) -> None:
        if self._answer is not None:  # nothing left to answer on
            self._answer.cancel()
            self._answer = None
        self.ended = True
        self.window.close(self.closed_why)
        self._stopped = True
        self.usable = False
        self.peer_done.set()
        self._room.set()
        self._flushed.set()

    async def close(self, reason: str) -> None:
        """Close the connection now; ``run`` then returns ``reason``."""
        if self._close_reason is None:
            self._close_reason = reason
        with contextlib.suppress(P2PHostError, OSError):
            await self.connection.close()


def _raised(task: asyncio.Task[object]) -> bool:
    """Whether ``task`` (done) ended with an exception."""
    return not task.cancelled() and task.exception() is not None
