"""The sender's durable outbox: messages of acknowledged topics, kept until acknowledged.

``send`` on an acknowledged topic appends the encoded message to the outbox journal
(:mod:`._outjournal`; the delivery database itself on a node without a state
directory) and returns once it is durable; a *pump* per peer sends what
the outbox holds for it whenever the peer is connected, in order, with at most
``[delivery] window`` messages unacknowledged. An ACK deletes the message. When the
connection changes, or no acknowledgement came within ``ack-timeout``, the pump goes
back and sends every unacknowledged message again (the receiver drops the copies it
has). So a message survives the sender being killed, the receiver being killed, and
the connection being lost in between.

A receiver that is slow, not gone, would be buried in copies if every ``ack-timeout``
sent the whole window again (and the more copies, the slower it gets): so each
timeout doubles the next wait, up to :data:`_MAX_BACKOFF` times ``ack-timeout``, until
a message sent only once since is acknowledged (copies' acknowledgements say nothing
about how long the receiver takes now) or the connection changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from p2phost_sdk import (
    Codec,
    CodecError,
    ConnectionClosed,
    FrameTooLarge,
    TaskOwner,
)

from ..._delivery_settings import DeliverySettings
from .._limited import LimitedLogs, WarnedOnce
from ..messaging._routes import TraceHook
from ..messaging._stats import DeliveryStats
from ..wire._channel import Channel
from ..wire._envelope import Kind, encode
from ..wire._said import named
from ._committer import LAZY, Committer
from ._deadletter import DeadLetter, DeadLetters, DeadLines
from ._outjournal import JournalRows, Waiting
from ._pumpstate import Pump, Row
from ._store import sql_id, wire_id

log = logging.getLogger("p2phost.delivery")
_PAGE = 256
_RECENT = 65_536
#: Peers whose ignored acknowledgements are counted apart (the least recent forgotten).
_ACK_LOGS = 256
#: Rows handed from ``put`` to a caught-up pump before it reads the database instead
#: (a caught-up pump's rows are mostly in the journal's memory anyway: the journal's
#: size bounds them; the database read merges those in, at a cost per row held).
_FRESH = 32_768
#: Rows a pump sends in one loop turn at most.
_TURN = 32
#: Seconds a pump that just sent lets new rows gather before it sends again: one write
#: for many messages of a sequential sender, instead of a system call each.
_CORK = 0.002
#: Journalled sends between two yields to the loop.
_YIELD = 16
#: The wait for acknowledgements doubles after each timeout, up to this many times
#: ``ack-timeout``.
_MAX_BACKOFF = 8
def key_id(key: str) -> int:
    """The message id of an idempotency key: stable, and apart from counted ids (which
    stay below 2**62)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & ((1 << 62) - 1)) | (1 << 62)




class Outbox:
    """The outbox of one node and a pump per peer."""

    def __init__(self, *, committer: Committer, dead: DeadLetters, stats: DeliveryStats,
                 settings: DeliverySettings, codecs: Mapping[str, Codec],
                 usable: Callable[[str], Channel | None],
                 acknowledged_by: Callable[[Channel, str], bool],
                 journal: JournalRows | None = None) -> None:
        self.committer = committer
        self.db = committer.db
        self.dead = dead
        self.stats = stats
        self.settings = settings
        self.codecs = codecs
        self._usable = usable
        self._acknowledged_by = acknowledged_by
        #: Where sends are made durable first (None: straight to the database).
        self.journal = journal
        #: What waits in the outbox (the table and the journal).
        self.queries = Waiting(self.db, journal)
        self._puts = 0
        self._pumps: dict[str, Pump] = {}
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        # Per peer: one line per window for acknowledgements this node does not wait for
        # (an ACK frame carries thousands: a line each would let a peer fill the log).
        self._ack_logs = LimitedLogs(log, "ignored acknowledgement frames", level=logging.INFO,
                                     keys=_ACK_LOGS)
        # Per peer and topic: a peer's codec or frame limit can make every message to it
        # a dead letter (the counters count each one).
        self._dead_lines = DeadLines(log)
        self._warned = WarnedOnce()
        self._tasks = TaskOwner('delivery', logger=log)
        #: Traces: the sender's context goes with each message (docs/operations.md).
        self.tracer: TraceHook | None = None
        #: Told when a pump has nothing in flight (``gone``: nor a connection), so the
        #: peer stops being dialled once nothing waits for it (:mod:`._redial`).
        self.settled: Callable[..., None] | None = None

    # -- putting messages in ---------------------------------------------------------

    async def put(self, dest: str, topic: str, data: bytes, content_type: str,
                  message_id: int) -> None:
        """Keep an encoded message for ``dest`` (a peer id, or an address while its peer
        is unknown); returns once it is durable (in the journal, or committed)."""
        if self.tracer is not None:
            self.tracer.remember(message_id)
        rows = self.journal
        if rows is not None and message_id >= 1 << 62 and self.queries.kept(dest, message_id):
            return  # sent with this key before, and not acknowledged: the same message
        held = None if rows is None else rows.append(dest, topic, data, content_type,
                                                     message_id)
        if held is not None:
            seq: int | None = held.seq
        else:
            row = (None if rows is None else next(rows.seqs), dest, sql_id(message_id),
                   topic, content_type, data, time.time())

            def insert(db: Any) -> int | None:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO outbox (seq, dest, id, topic, content_type, body, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                return int(cursor.lastrowid) if cursor.rowcount == 1 else None

            seq = await self.committer.write(insert, quick=True)
        pump = self._pumps.get(dest)
        if pump is not None:
            if seq is not None and pump.caught_up:
                if len(pump.fresh) < _FRESH:
                    pump.fresh.append(Row(seq, message_id, topic, content_type, data))
                else:  # far behind: read from the database again
                    pump.caught_up = False
                    pump.fresh.clear()
            pump.wake.set()
        if held is not None:
            self._puts += 1
            if self._puts % _YIELD == 0:
                # Nothing above waits: a sender sending in a loop would never let the
                # pumps (or anything else) run.
                await asyncio.sleep(0)

    # -- peers coming and going ------------------------------------------------------

    def connected(self, peer: str, addresses: list[str]) -> None:
        """A channel to ``peer`` opened: its messages (also those sent to one of its
        ``addresses`` before it was known) go out now."""
        pump = self._pumps.get(peer)
        if pump is None:
            pump = self._pumps[peer] = Pump(peer)
            self._tasks.spawn(self._pump(pump), f"outbox {peer[:12]}")
        pump.wake.set()
        if addresses:
            # Rows claimed from the addresses keep their places: once they are the
            # pump's, it looks from the start again (what is in flight is not resent).
            def rescan() -> None:
                pump.cursor, pump.caught_up = 0, False
                pump.fresh.clear()
                pump.wake.set()

            self.committer.submit(lambda db: _claim(db, peer, addresses), rescan)

    def wake(self, peer: str) -> None:
        """Something changed for ``peer`` (a channel ended, messages came back from the
        dead-letter store): its pump looks again."""
        pump = self._pumps.get(peer)
        if pump is not None:
            pump.caught_up = False  # rows may have come by another way: read again
            pump.fresh.clear()
            pump.wake.set()

    # -- acknowledgements ------------------------------------------------------------

    def acked(self, peer: str, ids: list[int]) -> None:
        """``peer`` acknowledged ``ids``: delete them from the outbox."""
        pump = self._pumps.get(peer)
        if pump is not None:
            for message_id in ids:
                if pump.inflight.pop(message_id, None) is not None \
                        and message_id not in pump.resent:
                    pump.backoff = 1  # the receiver answers in time again
                pump.resent.discard(message_id)
                pump.acked.add(message_id)
        if self.journal is not None:
            settled, ids = self.journal.acked(peer, ids)
            self._ignored(peer, [held.id for held in settled
                                 if not self._acked_one(peer, held.id, held.topic, pump)])
            if pump is not None and settled:
                pump.wake.set()
            if not ids:
                return
        topics: list[str | None] = []

        def op(db: Any) -> None:
            for message_id in ids:
                row = db.execute("DELETE FROM outbox WHERE dest = ? AND id = ? RETURNING topic",
                                 (peer, sql_id(message_id))).fetchone()
                topics.append(None if row is None else row[0])

        def then() -> None:
            self._ignored(peer, [message_id for message_id, topic
                                 in zip(ids, topics, strict=True)
                                 if not self._acked_one(peer, message_id, topic, pump)])
            if pump is not None:
                pump.wake.set()

        # Nobody waits for it: it rides with the next send's transaction.
        self.committer.submit(op, then, wait=LAZY, quick=True, rows=len(ids))

    def _acked_one(self, peer: str, message_id: int, topic: str | None,
                   pump: Pump | None) -> bool:
        """One acknowledged id; False when this node was not waiting for it."""
        key = (peer, message_id)
        if pump is not None:
            pump.acked.discard(message_id)
            pump.sent.discard(message_id)
        if topic is not None:
            self.stats.add(topic, "acked", 1, peer)
            self._recent[key] = None
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        elif key not in self._recent:  # a repeated ACK of a recent message is normal
            self.stats.unknown_acks += 1
            return False
        return True

    def _ignored(self, peer: str, ids: list[int]) -> None:
        """One line for an ACK frame's ids this node was not waiting for, rate-limited
        per peer (the rest of a window counted in one line when the next begins)."""
        if not ids:
            return
        self._ack_logs.log((peer,), "ignored %d acknowledgements from %s for messages this "
                           "node is not waiting for (the first %016x)", len(ids), peer, ids[0])

    # -- the pump --------------------------------------------------------------------

    async def _pump(self, pump: Pump) -> None:
        window, timeout = self.settings.window, self.settings.ack_timeout
        while True:
            pump.wake.clear()
            channel = self._usable(pump.peer)
            if channel is None and not pump.sent and not pump.acked:
                # Its peer is gone, and no message sent to it waits for an acknowledgement:
                # kept, the pumps would grow with every identity a peer makes up. What
                # waits for it stays in the outbox; its next connection starts a pump.
                del self._pumps[pump.peer]
                if self.settled is not None:
                    self.settled(pump.peer, gone=True)
                return
            if channel is not pump.channel:  # another connection: all unacknowledged again
                pump.channel, pump.cursor, pump.caught_up = channel, 0, False
                pump.fresh.clear()
                pump.inflight.clear()
                pump.resent.clear()
                pump.backoff = 1
            now = time.monotonic()
            waited = timeout * pump.backoff
            if pump.inflight and next(iter(pump.inflight.values())) + waited <= now:
                pump.backoff = min(2 * pump.backoff, _MAX_BACKOFF)
                log.info("no acknowledgement from %s within %gs for %d messages: sending "
                         "them again (and waiting up to %gs for the next)", pump.peer,
                         waited, len(pump.inflight), timeout * pump.backoff)
                pump.resent.update(pump.inflight)
                pump.cursor, pump.caught_up = 0, False
                pump.fresh.clear()
                pump.inflight.clear()
            room = min(window - len(pump.inflight), _PAGE) if channel else 0
            if room > 0 and pump.caught_up and pump.fresh \
                    and now < pump.sent_at + _CORK:
                await asyncio.sleep(pump.sent_at + _CORK - now)
                continue
            rows = self._page(pump, room)
            if rows and pump.caught_up:
                pump.sent_at = now
            for number, row in enumerate(rows, 1):
                pump.cursor = row.seq
                if row.id not in pump.acked and row.id not in pump.inflight:
                    await self._send(pump, channel, row)  # type: ignore[arg-type]
                if number % _TURN == 0:
                    await asyncio.sleep(0)  # a page is long work: let the loop breathe
                if pump.channel is not None and pump.channel.ended:
                    break
            if len(rows) == room > 0:
                continue  # there may be more; a short page means the outbox is sent
            if channel is not None and not pump.inflight and pump.caught_up \
                    and not pump.fresh and self.settled is not None:
                self.settled(pump.peer, gone=False)
            wait = next(iter(pump.inflight.values())) + timeout * pump.backoff \
                - time.monotonic() if pump.inflight else None
            try:
                async with asyncio.timeout(wait):
                    await pump.wake.wait()
            except TimeoutError:
                pass

    def _page(self, pump: Pump, room: int) -> list[Row]:
        if room <= 0:
            return []
        if pump.caught_up:
            fresh, rows = pump.fresh, list[Row]()
            while fresh and len(rows) < room:
                row = fresh.popleft()
                if row.seq > pump.cursor:  # else read already, before it was handed over
                    rows.append(row)
            return rows
        found = [Row(seq, wire_id(i), t, c, b) for seq, i, t, c, b in self.db.execute(
            "SELECT seq, id, topic, content_type, body FROM outbox WHERE dest = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (pump.peer, pump.cursor, room))]
        held = self.queries.held(pump.peer)
        if held:  # in the journal, perhaps not in the database yet: both, once each
            got = {row.seq for row in found}
            found.extend(Row(h.seq, h.id, h.topic, h.content_type, h.body) for h in held
                         if h.seq > pump.cursor and h.seq not in got)
            found.sort()
            full = len(found) >= room
            found = found[:room]
        else:
            full = len(found) >= room
        if not full:
            pump.caught_up = True
            pump.fresh.clear()
        return found

    async def _send(self, pump: Pump, channel: Channel, row: Row) -> None:
        if row.topic not in channel.topics:
            self._dead_out(pump.peer, row, f"the peer does not handle topic {row.topic!r} "
                                           f"(its topics: {named(channel.topics)})")
            return
        frame = self._frame(pump.peer, channel, row)
        if frame is None:
            return
        if not channel.try_post(frame):
            try:
                await channel.send(frame)
            except ConnectionClosed:
                return  # sent again on the next connection
        self.stats.add(row.topic, "resent" if row.id in pump.sent else "sent", 1, pump.peer)
        self.stats.add(row.topic, "bytes_sent", len(frame), pump.peer)  # (every frame's)
        if self._acknowledged_by(channel, row.topic):
            pump.sent.add(row.id)
            pump.inflight[row.id] = time.monotonic()
            return
        if self._warned.first(pump.peer, row.topic):
            log.warning("%s handles topic %r without acknowledgements (at-most-once): "
                        "messages from the outbox go to it once, unacknowledged",
                        pump.peer, row.topic)
        self.committer.submit(lambda db: db.execute("DELETE FROM outbox WHERE seq = ?",
                                                    (row.seq,)),
                              lambda: self._gone_from(pump.peer), quick=True)

    def _frame(self, peer: str, channel: Channel, row: Row) -> bytes | None:
        data = row.body
        if row.content_type != channel.codec.content_type:
            codec = self.codecs.get(row.content_type)
            try:
                if codec is None:
                    raise CodecError(f"no codec for {row.content_type} is loaded")
                data = channel.codec.encode(codec.decode(data))
            except CodecError as exc:
                self._dead_out(peer, row, f"cannot re-encode it from {row.content_type} to "
                                          f"{channel.codec.content_type}, the peer's codec: {exc}")
                return None
        frame = encode(Kind.MESSAGE, row.id, row.topic.encode(), data,
                       trace=b"" if self.tracer is None else self.tracer.recall(row.id, channel))
        if len(frame) > channel.frame_limit:
            error = FrameTooLarge(f"{len(frame)} bytes, over the maximum frame size of "
                                  f"{channel.frame_limit} ({channel.frame_limit_source})")
            self._dead_out(peer, row, f"too large for the connection: {error}")
            return None
        return frame

    def _dead_out(self, peer: str, row: Row, reason: str) -> None:
        now = time.time()
        letter = DeadLetter(0, "out", peer, row.id, row.topic, row.content_type, row.body, 0,
                            reason, "", "", now, now)
        outcome: list[tuple[int, list[DeadLetter]]] = []

        def op(db: Any) -> None:
            db.execute("DELETE FROM outbox WHERE seq = ?", (row.seq,))
            outcome.append(self.dead.add(db, letter))

        def then() -> None:
            letter_id, dropped = outcome[0]
            if letter_id:
                self._dead_lines.log((peer, row.topic),
                                     "message %016x to %s on %r went to the dead-letter store "
                                     "as #%d: %s", row.id, peer, row.topic, letter_id, reason)
            self._dead_lines.dropped(self.dead, dropped, self.stats)
            self.stats.add(row.topic, "dead_lettered", 1, peer)
            self._gone_from(peer)

        self.committer.submit(op, then)

    def _gone_from(self, peer: str) -> None:
        """A row of ``peer``'s left the outbox without an acknowledgement: its pump looks
        again, so a peer owed nothing more stops being dialled (it settled while the row
        was still there, and nothing else would wake it)."""
        pump = self._pumps.get(peer)
        if pump is not None:
            pump.wake.set()

    # -- shutdown --------------------------------------------------------------------

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for connected peers to acknowledge what they
        were sent; returns how many messages still wait in the outbox."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            busy = [p for p in self._pumps.values() if self._usable(p.peer) is not None
                    and (p.inflight or self.queries.has_rows(p.peer))]
            if not busy:
                break
            await asyncio.sleep(0.02)
        return self.queries.count()

    async def close(self) -> None:
        """Stop every pump (what is left stays in the outbox, or the journal)."""
        await self._tasks.close()
        if self.journal is not None:
            self.journal.fold(urgent=True)  # so the next start has little to replay

    def flush_logs(self) -> None:
        """Log the counts the rate-limited lines held back (after the last commit)."""
        self._ack_logs.flush()
        self._dead_lines.flush()


def _claim(db: Any, peer: str, addresses: list[str]) -> None:
    marks = ", ".join("?" * len(addresses))
    db.execute(f"UPDATE OR IGNORE outbox SET dest = ? WHERE dest IN ({marks})",
               (peer, *addresses))
    # What is left was also sent to the peer id with the same key: the same message.
    db.execute(f"DELETE FROM outbox WHERE dest IN ({marks})", addresses)
