"""One virtual connection over two inboxes: the stream semantics of TCP on a one-way medium.

Each side numbers the records it sends (per epoch). The receiver hands frames to the
node strictly in that order, holds back early ones until the gap fills, drops
duplicates (a medium redelivers what was not acknowledged), and acknowledges a record
only once the node is done with its frame. Flow control: the sender keeps at most
``window`` frames beyond what the receiver has taken; the receiver says how far it got
with CREDIT records, so a slow reader slows the sender and the medium holds little.

Both ends use the smaller of their two windows: each announces its own in OPEN (the
dialler) or ACCEPT/REOPEN (the listener). A frame numbered past the last credit sent
plus that window came from a sender that ignores credit: the connection is closed with
that reason, so the frames a receiver holds stay within one window whatever the peer
does. (A peer too old to announce a window is held to this end's.)

Copies of a frame already held (early, or handed to the node and not done) keep their
medium tokens, acknowledged with the first copy; at most ``COPIES_HELD`` per frame. More
copies of an early frame come from a sender replaying records (a medium redelivers a
frame a few times within the gap timeout, not thousands): the connection is closed and
the copies let go. Copies past the bound of a frame the node is working on are never
acknowledged before the node is done with it: a durable medium that redelivers on a
timer (JetStream every 5 s, unless told the node is still working on it) makes such
copies for as long as a handler runs, and acknowledging one would settle the record
itself (lost if the node then crashed). Such a copy is let go unacknowledged (the held
copy's acknowledgement settles it, or the medium delivers it again later and it is
acknowledged then), unless the medium says it is a record of its own
(:meth:`~._medium.Medium.record_of`: a sender's append repeated), acknowledged at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .._errors import ConnectionClosed, FrameTooLarge, TransportError
from .._transport import DeliveredFrame
from ._record import Record, RecordType
from ._sending import Sending, announced_window

if TYPE_CHECKING:
    from ._endpoint import Endpoint

log = logging.getLogger("p2phost.transport")
_CLOSE_TIMEOUT = 2.0
#: The medium tokens kept per frame held (its first copy's and its copies'); the host's
#: receiver holds as many copies of a message it works on, so the two settle alike.
COPIES_HELD = 16
_Key = tuple[int, int]  # (epoch, seq) of a received frame


class InboxConnection(Sending):
    """A connection to one peer through its inbox; the peer answers through ours."""

    def __init__(self, endpoint: Endpoint, *, connection_id: bytes, dialler: bool,
                 peer_id: str, peer_inbox: str, in_epoch: int | None = None,
                 next_seq: int = 1, peer_window: int | None = None) -> None:
        self._endpoint = endpoint
        self.connection_id = connection_id
        #: The inbox the peer reads (its peer id, or a short-lived reply inbox).
        self.peer_inbox = peer_inbox
        #: Whether this side dialled (records it sends carry the dialler flag).
        self.dialler = dialler
        self.remote_peer_id = peer_id
        self.local_address = endpoint.address
        self.remote_address = endpoint.address_of(peer_id)
        self._limit = endpoint.frame_limit
        if endpoint.frame_limit < endpoint.max_frame_size:
            self.max_frame_size = endpoint.frame_limit
        self._window = min(endpoint.window, peer_window or endpoint.window)
        #: A listener resumed after a restart no longer knows the credit its killed run
        #: gave: frames in order are not held to the window on such a connection.
        self.resumed_run = False
        # Sending side.
        self.out_epoch = secrets.randbits(32)
        self._out_seq = 0
        self._credited = 0
        self._credit = asyncio.Event()
        self.send_lock = asyncio.Lock()
        #: A resumed listener's node sends its hello again: the dialler has it already.
        self.swallow_first_frame = False
        # Receiving side.
        self.in_epoch = in_epoch
        self._next = next_seq
        self._early: dict[int, tuple[Record, list[Any]]] = {}
        self._gap_since = 0.0
        self._replaying = False
        self._ready: deque[tuple[_Key, bytes | None]] = deque()
        self._wake = asyncio.Event()
        #: Frames handed on (or ready to be) but not yet done -> the tokens to ack then.
        self._pending: dict[_Key, list[Any]] = {}
        #: Frames a resumed connection finished before the restart (out of order).
        self.skip: set[int] = set()
        self._taken = 0
        self._credit_sent = 0
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not dialler:
            self._opened.set_result(None)  # a listener's end is open once it exists
        self._remote_reason = ""
        self._remote_closed: str | None = None
        self._failure: TransportError | None = None
        self.closed = False

    # -- opening ---------------------------------------------------------------------

    async def wait_accepted(self, timeout: float) -> None:
        """Wait for the listener's ACCEPT (or REFUSE) after our OPEN."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._opened)
        except TimeoutError:
            raise TransportError(
                f"cannot reach {self.remote_address}: no answer within {timeout:g}s (no "
                "node with that peer id is listening on this medium now)") from None

    async def append(self, records: list[bytes]) -> None:
        """Append ``records`` to the peer's inbox (retrying while the medium is down)."""
        await self._endpoint.append_to_peer(self, records)

    # -- receiving -------------------------------------------------------------------

    def receive(self, record: Record, token: Any) -> None:
        """Take one record of this connection from our inbox (never blocks)."""
        kind = record.type
        if kind is RecordType.CREDIT:
            self._endpoint.ack([token])
            if record.epoch == self.out_epoch and record.seq > self._credited:
                # Never beyond what was sent: a forged credit (anyone who may write to
                # the medium) must not lift the window for frames not yet numbered.
                self._credited = min(record.seq, self._out_seq)
                self._credit.set()
        elif kind in (RecordType.ACCEPT, RecordType.REOPEN, RecordType.REFUSE,
                      RecordType.RESET):
            self._endpoint.ack([token])
            self._control(record)
        elif record.epoch != self.in_epoch:
            self._endpoint.ack([token])  # from an earlier incarnation of the other side
        else:
            self._in_order(record, [token])

    def take_data(self, epoch: int, seq: int, payload: bytes, token: Any) -> bool:
        """Take a DATA record if it is simply the next frame (the router's fast path for
        every message); False, having changed nothing, for anything else: a gap, a copy,
        another epoch, a resumed or opening frame take :meth:`receive`'s path."""
        if seq != self._next or epoch != self.in_epoch or self._early or self.skip \
                or (seq == 1 and not self.dialler) or seq > self._credit_sent + self._window:
            return False  # (past the window: receive refuses it, see _in_order)
        key = (epoch, seq)
        self._next = seq + 1
        self._pending[key] = [token]
        self._endpoint.outstanding += 1
        self._ready.append((key, payload))
        self._wake.set()
        return True

    def _control(self, record: Record) -> None:
        if record.type is RecordType.REFUSE:
            reason = record.payload.decode(errors="replace")
            self._fail(TransportError(f"{self.remote_address} refused the connection: {reason}"))
            return
        if record.type is RecordType.RESET:
            self._fail(ConnectionClosed(f"{self.remote_address} does not know this connection "
                                        "any more (it restarted or closed it)"))
            return
        window = announced_window(record.payload)
        if window is not None:
            self._window = min(self._endpoint.window, window)
        if record.epoch != self.in_epoch:
            # A new epoch of the other side (ACCEPT, or REOPEN after it restarted and
            # resumed): its records are numbered afresh.
            self.in_epoch, self._next, self._early = record.epoch, 1, {}
            self._taken = self._credit_sent = 0
            self._gap_since = 0.0
        if not self._opened.done():
            self._opened.set_result(None)

    def _in_order(self, record: Record, tokens: list[Any]) -> None:
        if self._replaying:
            # Cut off for replaying: hold nothing more, but never settle a frame the
            # node works on with a copy's acknowledgement.
            if not self.let_copy_go(record, tokens):
                self._endpoint.ack(tokens)
            return
        seq = record.seq
        if seq < self._next:
            held = self._pending.get((record.epoch, seq))
            if held is None:
                self._endpoint.ack(tokens)  # a copy of a frame done with
            elif len(held) < COPIES_HELD:
                held.extend(tokens)  # acknowledged with the first copy, once done
            else:
                self._let_copies_go(held, tokens)
            return
        if seq > self._credit_sent + self._window * (2 if self.resumed_run else 1):
            # Past the credit we gave (a resumed run allows early frames up to two
            # windows, and does not know the credit its killed run gave in order).
            if seq > self._next or not self.resumed_run:
                self._endpoint.ack(tokens)
                self._fail(TransportError(
                    f"{self.remote_address} sent more than its flow-control window "
                    f"({self._window} frames): frame {seq} with credit given up to "
                    f"{self._credit_sent}; closing the connection"))
                return
        if seq > self._next:
            early = self._early.get(seq)
            if early is not None:
                early[1].extend(tokens)
                if len(early[1]) > COPIES_HELD:
                    self._replayed(seq)
            else:
                if not self._early:
                    self._gap_since = time.monotonic()
                self._early[seq] = (record, tokens)
            return
        self._take(record, tokens)
        while self._next in self._early:
            self._take(*self._early.pop(self._next))
        self._gap_since = time.monotonic() if self._early else 0.0

    def _take(self, record: Record, tokens: list[Any]) -> None:
        seq, key = record.seq, (record.epoch, record.seq)
        self._next = seq + 1
        if seq in self.skip:
            self.skip.discard(seq)
            self._endpoint.ack(tokens)
            if not self._ready:  # taken before the restart: the dialler gets its room back
                self._took(key)
        elif record.type is RecordType.CLOSE:
            self._endpoint.frame_done(self, seq, tokens)
            self._remote_reason = record.payload.decode(errors="replace") or "closed"
            self._ready.append((key, None))
        else:
            if seq == 1 and not self.dialler:
                self._endpoint.opening_frame(self, record.payload)
            self._pending[key] = tokens
            self._endpoint.outstanding += 1
            self._ready.append((key, record.payload))
        self._wake.set()

    def let_copy_go(self, record: Record, tokens: list[Any]) -> bool:
        """If ``record`` is a copy of a frame the node works on (after the connection
        was cut off, or closed), let its ``tokens`` go as the copies past
        ``COPIES_HELD``: True. False for any other record."""
        held = self._pending.get((record.epoch, record.seq))
        if held is None or record.type is not RecordType.DATA:
            return False
        self._let_copies_go(held, tokens)
        return True

    def _let_copies_go(self, held: list[Any], tokens: list[Any]) -> None:
        """Copies past ``COPIES_HELD`` of a frame the node works on: acknowledge only
        those the medium says are records of their own, not deliveries of a held one
        (whose acknowledgement would settle the frame before the node is done)."""
        record_of = self._endpoint.medium.record_of
        settled_with_held = {record_of(token) for token in held}
        own = [token for token in tokens
               if (stored := record_of(token)) is not None and stored not in settled_with_held]
        if own:
            self._endpoint.ack(own)

    def _replayed(self, seq: int) -> None:
        error = TransportError(
            f"{self.remote_address} sent frame {seq} more than {COPIES_HELD} times while "
            f"frame {self._next} was missing (a sender replaying records, not a medium "
            "redelivering): closing the connection")
        log.warning("%s", error)
        self._replaying = True
        self._let_early_go()
        self._fail(error)

    def _let_early_go(self) -> None:
        """Acknowledge the early frames held: nobody will take them now."""
        early, self._early, self._gap_since = self._early, {}, 0.0
        self._endpoint.ack([token for _, tokens in early.values() for token in tokens])

    def check_gap(self, timeout: float) -> None:
        """Fail the connection if frames have been missing for ``timeout`` seconds."""
        if self._gap_since and time.monotonic() - self._gap_since > timeout:
            self._fail(TransportError(
                f"frames {self._next}..{min(self._early) - 1} from {self.remote_address} "
                f"never arrived (lost on the medium within {timeout:g}s): closing the "
                "connection"))

    def replay(self, frame: bytes) -> None:
        """Hand ``frame`` to the node first (a resumed connection's opening frame)."""
        self._ready.appendleft(((0, 0), frame))
        self._wake.set()

    async def recv(self) -> bytes:
        """The next frame from the peer, in order."""
        while not self._ready:
            self._check_open()
            self._wake.clear()
            await self._wake.wait()
        key, frame = self._ready[0]
        if frame is None:  # the peer's CLOSE, after every frame it sent before
            self._remote_closed = self._remote_reason
            self._check_open()
            raise ConnectionClosed("closed")  # not reached: _check_open raised
        self._ready.popleft()
        seq = key[1]
        if seq:
            # Frames after it that the node finished before a restart were skipped:
            # once nothing else waits, they count as taken too.
            last = self._next - 1 if not self._ready and key[0] == self.in_epoch else seq
            self._took((key[0], max(seq, last)))
        if len(frame) > self._endpoint.max_frame_size:
            self.done(key)
            raise FrameTooLarge(
                f"{self.remote_address} sent a frame of {len(frame)} bytes, over the maximum "
                f"of {self._endpoint.max_frame_size} bytes")
        if not seq:
            return frame  # a resumed connection's opening frame: done before the restart
        if not self._endpoint.acknowledges:
            self.done(key)
            return frame
        return DeliveredFrame(frame, lambda: self.done(key))

    def _took(self, key: _Key, *, now: bool = False) -> None:
        """Frames up to ``key`` are taken: credit the peer for them every half window
        (``now``: at once)."""
        self._taken = key[1]
        if now or self._taken - self._credit_sent >= max(1, self._window // 2):
            self._credit_sent = self._taken
            self._endpoint.control(self, self.record(RecordType.CREDIT, key[1], epoch=key[0]))

    def credit_again(self) -> None:
        """Send the peer its credit again (the medium may have lost the last one)."""
        if self.in_epoch is not None and self._taken:
            self._took((self.in_epoch, self._taken), now=True)

    def resumed(self) -> None:
        """A resumed listener's connection: credit the frames its killed run took.

        Its journal was written as each was done, its credits were sent a moment later,
        so the last may have died with the process; and those frames, done, are not taken
        again. Without this a dialler whose window they filled would wait for credit
        forever.
        """
        if self.in_epoch is not None and self._next > 1:
            self._took((self.in_epoch, self._next - 1), now=True)

    async def recv_many(self) -> list[bytes]:
        """The frames ready now (at least one, at most a window), in order, so the node
        handles a burst in one pass rather than one ``recv`` per frame. The peer is
        credited once for the burst."""
        frames = [await self.recv()]
        ready = self._ready
        if not ready:
            return frames
        limit, room = self._endpoint.max_frame_size, self._window - 1
        acknowledges = self._endpoint.acknowledges
        done, epoch, last = self.done, ready[0][0][0], 0
        while ready and room:
            key, frame = ready[0]
            if frame is None or len(frame) > limit or key[0] != epoch or not key[1]:
                break  # the peer's CLOSE, a frame refused, a new epoch: the next recv's
            ready.popleft()
            room -= 1
            last = key[1]
            if acknowledges:
                frames.append(DeliveredFrame(frame, functools.partial(done, key)))
            else:
                done(key)
                frames.append(frame)
        if last:
            # As recv: frames skipped after the last (done before a restart) count too.
            if not ready and epoch == self.in_epoch:
                last = max(last, self._next - 1)
            self._took((epoch, last))
        return frames

    def done(self, key: _Key) -> None:
        """The node is done with the frame ``key``: acknowledge it on the medium."""
        tokens = self._pending.pop(key, None)
        if tokens is not None:
            self._endpoint.outstanding -= 1
            self._endpoint.frame_done(self, key[1], tokens)
        if self.closed and not self._pending:
            self._endpoint.forget(self)

    # -- ending ----------------------------------------------------------------------

    def _fail(self, error: TransportError) -> None:
        if self._failure is None and not self.closed:
            self._failure = error
        self._wake.set()
        self._credit.set()
        if not self._opened.done():
            self._opened.set_exception(error)
            self._opened.exception()  # the dialler may have given up waiting: no warning

    def lost(self, reason: str) -> None:
        """The endpoint is going away: no more frames either way."""
        self._fail(ConnectionClosed(reason))

    async def close(self) -> None:
        """Tell the peer (after the frames sent so far), then stop. Idempotent."""
        if self.closed:
            return
        tell = self._failure is None and self._remote_closed is None and self._opened.done()
        self.closed = True
        self._wake.set()
        self._credit.set()
        untaken = [key for key, frame in self._ready if key[1] and frame is not None]
        self._ready.clear()
        for key in untaken:  # nobody will read them: done, so the medium lets them go
            self.done(key)
        if tell:
            with contextlib.suppress(TransportError, TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT), self.send_lock:
                    self._out_seq += 1
                    await self._endpoint.append_to_peer(
                        self, [self.record(RecordType.CLOSE, self._out_seq, b"closed")])
        self._endpoint.remove(self)
        if not self._pending:
            self._endpoint.forget(self)
