"""The receiving side of acknowledged delivery: dedupe, retries, delayed retries, dead letters.

A message of an acknowledged topic goes through the app's mailbox like any other
(per-peer order, one at a time, backpressure). Its handler runs up to
``1 + immediate_retries`` times; then the message is put aside in the delivery
database for a delayed retry (exponential back-off), or, after the last round, goes to
the dead-letter store. A body the codec cannot decode (or the handler's model refuses)
goes to the dead-letter store at once. The message is acknowledged (to its sender with an
ACK frame, and to the medium that carried it) only once one of these outcomes is committed.

A stored letter that comes again while its first delivery is busy is acknowledged to its
medium with the first one's outcome, never before: a broker that delivers a stored record
again while the first delivery waits in the mailbox (JetStream, after its ack wait)
settles the record itself on the copy's acknowledgement, which a node killed before the
outcome lost. Any other copy (a frame on a connection: a sender's resend, a record of its
own; an inbox connection answers redeliveries of one frame itself) is acknowledged at
once, as nothing else would settle it in this run.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from p2phost_sdk import (
    BodyInvalid,
    Codec,
    CodecError,
    Delivery,
    DeliveryMode,
    Message,
    MessageKind,
    TaskOwner,
)

# Letters of a busy letter whose medium acknowledgements wait for its outcome: as many as
# an inbox connection holds per frame; more are let go unacknowledged (redeliveries of its
# record: its acknowledgement settles them).
from p2phost_sdk.inbox import COPIES_HELD

from .._limited import LimitedLogs
from ..messaging._routes import Route, Work
from ..messaging._stats import DeliveryStats
from ..wire._channel import Ack, Channel
from ..wire._envelope import Envelope
from ._appstate import AppState, Session
from ._committer import Committer
from ._deadletter import DeadLetter, DeadLetters, DeadLines
from ._dedupe import DONE, Dedupe
from ._injournal import OutcomeJournal
from ._store import StoreError, sql_id, wire_id

log = logging.getLogger("p2phost.delivery")
#: What a copy of a busy message is (a done one's: :data:`~._dedupe.DONE`).
_BUSY = "busy"
#: Seconds a handler's outcome waits for others to share its commit.
_OUTCOME_WAIT = 0.001
#: Acknowledge ``message_id`` to ``peer`` (on ``channel`` if still open).
Acknowledge = Callable[[str, int, Channel | None], None]
_RETRY_SOON = 1.0
_PRUNE_EVERY = 3600.0


@dataclass(slots=True)
class Job:
    """One message of an acknowledged topic on its way to the handler."""

    peer: str
    message_id: int
    topic: str
    content_type: str
    body: bytes
    #: Whether the sender waits for an ACK (False once it has one: a delayed retry).
    acknowledge: bool = True
    channel: Channel | None = None
    medium_ack: Ack | None = None
    attempts: int = 0
    rounds: int = 0
    #: Its row in the delayed-retry queue, if it came from there.
    delayed_key: int | None = None
    first_at: float = field(default_factory=time.time)
    error: str = ""
    traceback: str = ""
    #: The medium acknowledgements of copies that came while it was busy.
    copies: list[Ack] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int]:
        """(sender, message id)."""
        return self.peer, self.message_id


class Receiver:
    """Acknowledged messages of one node, from the wire or the delayed queue to an outcome."""

    def __init__(self, *, committer: Committer, dedupe: Dedupe, state: AppState,
                 dead: DeadLetters, stats: DeliveryStats, policies: Mapping[str, Delivery],
                 apps: Mapping[str, str], routes: Mapping[str, Route],
                 codecs: Mapping[str, Codec], acknowledge: Acknowledge) -> None:
        self.committer = committer
        self.db = committer.db
        self.dedupe = dedupe
        self.state = state
        self.dead = dead
        self.stats = stats
        self.policies = policies
        self.apps = apps
        self.routes = routes
        self.codecs = codecs
        self.acknowledge = acknowledge
        #: Where successful outcomes are made durable first (None: the database).
        self.outcomes: OutcomeJournal | None = None
        self._durable_topics = frozenset(
            topic for topic, policy in policies.items()
            if policy.mode is DeliveryMode.EFFECTIVELY_ONCE)
        #: Busy messages (taken, outcome not committed) by key: copies wait on them (the
        #: dedupe window knows the done ones only).
        self._busy: dict[tuple[str, int], Job] = {}
        self._due: list[tuple[float, int]] = []
        self._scheduled: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks = TaskOwner('delivery', logger=log)
        # A peer causes these once per message: rate-limited per peer and topic, the
        # first of a window in full (the counters count every one).
        self._failures = LimitedLogs(log, "handler failures")
        self._parked = LimitedLogs(log, "delayed retries")
        self._dead_lines = DeadLines(log)

    # -- from the wire ---------------------------------------------------------------

    def receive(self, channel: Channel, envelope: Envelope, medium_ack: Ack | None,
                route: Route) -> Awaitable[None] | None:
        """A MESSAGE of an acknowledged topic this node handles (the dispatcher's seam)."""
        topic, peer = envelope.topic, channel.peer_id
        key = (peer, envelope.message_id)
        seen = _BUSY if key in self._busy else self.dedupe.seen(
            key, durable=self._durable(topic))
        if seen is not None:
            self.stats.add(topic, "duplicates", 1, peer)
            log.debug("dropping a copy of message %016x from %s (%s)", key[1], peer, seen)
            if seen is DONE:
                self.acknowledge(peer, envelope.message_id, channel)
                if medium_ack is not None:
                    medium_ack()
            elif medium_ack is not None:
                self._hold_copy(key, channel, medium_ack)
            return None
        codec = channel.codec
        job = Job(peer, envelope.message_id, topic, codec.content_type, envelope.body,
                  channel=channel, medium_ack=medium_ack)
        self._take(job)
        try:
            body = codec.decode(envelope.body)
        except CodecError as exc:
            self._dead(job, f"poison message: the body cannot be decoded as "
                            f"{codec.content_type}: {exc}")
            return None
        return self._enqueue(job, body, route)

    def refuse(self, channel: Channel, envelope: Envelope, medium_ack: Ack,
               reason: str) -> None:
        """Straight to the dead-letter store with ``reason``, no handler, no ACK frame."""
        job = Job(channel.peer_id, envelope.message_id, envelope.topic,
                  channel.codec.content_type, envelope.body, acknowledge=False,
                  channel=channel, medium_ack=medium_ack)
        self._dead(job, reason)

    def _durable(self, topic: str) -> bool:
        return topic in self._durable_topics

    def _enqueue(self, job: Job, body: Any, route: Route) -> Awaitable[None] | None:
        message = Message(format(job.message_id, "016x"), MessageKind.MESSAGE, job.peer,
                          job.topic, body, None, job.content_type)
        item = Work(functools.partial(self._run, job, route.handler), message, job.message_id,
                    channel=job.channel, counted=True, _size=len(job.body))
        if (stamp := route.stamp) is not None:  # not route.stamp(item): a method lookup
            stamp(item)
        if route.mailbox.try_put(job.peer, item):
            return None
        return route.mailbox.put(job.peer, item)

    # -- running the handler ---------------------------------------------------------

    async def _run(self, job: Job, handler: Callable[[Message], Awaitable[Any]],
                   message: Message) -> None:
        policy = self.policies.get(job.topic) or Delivery(DeliveryMode.AT_LEAST_ONCE)
        app = self.apps.get(job.topic, "")
        settled = False
        first = job.attempts + 1  # the message built for this run is not shared yet
        try:
            for _ in range(policy.immediate_retries + 1):
                if job.attempts:
                    self.stats.add(job.topic, "retried", 1, job.peer)
                job.attempts += 1
                session = self.state.session(app)
                if job.attempts > first:  # each run gets its own message
                    message = Message(message.id, message.kind, message.sender, message.topic,
                                      message.body, message.correlation_id,
                                      message.content_type)
                message.attempt, message.store = job.attempts, session
                try:
                    await handler(message)
                except BodyInvalid as exc:  # handler(model=) refused it: no retry can help
                    self._failed(job, exc, policy)
                    settled = True
                    self._dead(job, f"poison message: {exc}")
                    return
                except Exception as exc:
                    self._failed(job, exc, policy)
                    continue
                settled = True
                self._succeeded(job, session)
                return
            settled = True
            if job.rounds < policy.delayed_retries:
                self._park(job, policy)
            else:
                self._dead(job, f"the handler failed all {job.attempts} attempts")
        finally:
            if not settled:  # cancelled (shutdown): not acknowledged, so it comes again
                self._release(job, done=False)

    def _failed(self, job: Job, exc: Exception, policy: Delivery) -> None:
        job.error = f"{type(exc).__name__}: {exc}"
        job.traceback = "".join(traceback.format_exception(exc))
        self._failures.log((job.peer, job.topic),
                           "the %r handler failed on message %016x from %s (attempt %d of "
                           "%d): %s", job.topic, job.message_id, job.peer, job.attempts,
                           policy.attempts, job.error, exc_info=exc,
                           fields=_fields(job))

    def _succeeded(self, job: Job, session: Session) -> None:
        durable = self._durable(job.topic)
        if not (session.writes or durable or job.delayed_key is not None):
            self._settled(job, "handled")
            return
        write, settle = self.state.commit(session)
        if job.delayed_key is None and self.outcomes is not None and self.outcomes.append(
                job.key, durable, session.app, session.writes, settle):
            self._settled(job, "handled")  # durable in the journal: acknowledged now
            return

        def op(db: Any) -> None:
            write(db)
            self._close_out(db, job, durable)

        def then() -> None:
            settle()
            self._settled(job, "handled")

        def failed() -> None:
            settle()
            self._given_up(job)

        # Nobody waits for it but the ACK: the outcomes of a burst share one commit.
        self.committer.submit(op, then, failed, wait=_OUTCOME_WAIT, quick=True)

    def _close_out(self, db: Any, job: Job, durable: bool) -> None:
        """The writes every outcome shares: off the delayed queue, into the dedupe window."""
        if job.delayed_key is not None:
            db.execute("DELETE FROM delayed WHERE key = ?", (job.delayed_key,))
        if durable:
            Dedupe.mark(db, job.key)

    def _take(self, job: Job) -> None:
        self._busy[job.key] = job

    def _hold_copy(self, key: tuple[str, int], channel: Channel, medium_ack: Ack) -> None:
        """A copy of the busy message ``key``. One that may be the first one's stored record
        delivered again (both letters: the medium redelivers a letter the node holds)
        is acknowledged with the first one's outcome, as that acknowledgement settles the
        record. Any other copy is a record of its own (a sender's resend is a new frame;
        an inbox connection answers a frame's redeliveries itself): acknowledged now, or
        nothing would ever settle it in this run."""
        job = self._busy.get(key)
        if job is None or not (_stored(channel) and _stored(job.channel)):
            medium_ack()
        elif len(job.copies) < COPIES_HELD:
            job.copies.append(medium_ack)

    def _release(self, job: Job, *, done: bool) -> list[Ack]:
        """``job``'s outcome is committed (``done``), or it was given up; the medium
        acknowledgements of its copies, for the caller to give with its own (a copy of a
        message given up is let go, as the message is: both come again)."""
        if self._busy.get(job.key) is job:  # not a refused one's: it was never taken
            del self._busy[job.key]
        if done:
            self.dedupe.remember(job.key)
        copies, job.copies = job.copies, []
        return copies

    def _settled(self, job: Job, counter: str | None) -> None:
        copies = self._release(job, done=True)
        if job.acknowledge:
            self.acknowledge(job.peer, job.message_id, job.channel)
        if job.medium_ack is not None:
            job.medium_ack()
        for medium_ack in copies:
            medium_ack()
        if counter is not None:
            self.stats.add(job.topic, counter, 1, job.peer)

    def _given_up(self, job: Job) -> None:
        # The outcome was not committed: not acknowledged, so the sender (or the
        # delayed queue) brings the message again.
        self._release(job, done=False)
        if job.delayed_key is not None:
            self._schedule(job.delayed_key, time.time() + _RETRY_SOON)

    # -- outcomes other than success -------------------------------------------------

    def _park(self, job: Job, policy: Delivery) -> None:
        delay = policy.delay(job.rounds)
        due, rounds = time.time() + delay, job.rounds + 1
        durable = self._durable(job.topic)
        keys: list[int] = []

        def op(db: Any) -> None:
            if job.delayed_key is None:
                cursor = db.execute(
                    "INSERT INTO delayed (sender, id, topic, content_type, body, attempts, "
                    "rounds, due, first_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job.peer, sql_id(job.message_id), job.topic, job.content_type, job.body,
                     job.attempts, rounds, due, job.first_at))
                keys.append(int(cursor.lastrowid))
            else:
                db.execute("UPDATE delayed SET attempts = ?, rounds = ?, due = ? WHERE key = ?",
                           (job.attempts, rounds, due, job.delayed_key))
                keys.append(job.delayed_key)
            if durable:
                Dedupe.mark(db, job.key)

        def then() -> None:
            self._parked.log((job.peer, job.topic),
                             "message %016x from %s on %r: the handler failed %d times; "
                             "retrying in %gs (delayed retry %d of %d)", job.message_id,
                             job.peer, job.topic, job.attempts, delay, rounds,
                             policy.delayed_retries, fields=_fields(job))
            self._schedule(keys[0], due)
            self._settled(job, None)  # safe in the delayed queue: the sender may forget it

        self.committer.submit(op, then, lambda: self._given_up(job))

    def _dead(self, job: Job, reason: str) -> None:
        letter = DeadLetter(0, "in", job.peer, job.message_id, job.topic, job.content_type,
                            job.body, job.attempts, reason, job.error, job.traceback,
                            job.first_at, time.time())
        durable = self._durable(job.topic)
        outcome: list[tuple[int, list[DeadLetter]]] = []

        def op(db: Any) -> None:
            outcome.append(self.dead.add(db, letter))
            self._close_out(db, job, durable)

        def then() -> None:
            letter_id, dropped = outcome[0]
            if letter_id:
                self._dead_lines.log(
                    (job.peer, job.topic),
                    "message %016x from %s on %r went to the dead-letter store as #%d: "
                    "%s%s (see `p2phost dead show %d`)", job.message_id, job.peer,
                    job.topic, letter_id, reason,
                    f"; last error: {job.error}" if job.error else "", letter_id,
                    fields=_fields(job))
            self._dead_lines.dropped(self.dead, dropped, self.stats)
            self._settled(job, "dead_lettered")
            if job.error:  # its handler failed every attempt: failed for good (metrics, top)
                self.stats.add(job.topic, "failed", 1, job.peer)

        self.committer.submit(op, then, lambda: self._given_up(job))

    # -- the delayed-retry queue -----------------------------------------------------

    def start(self) -> None:
        """Schedule what the delayed queue holds (from an earlier run, or requeued dead
        letters), and start the task that brings each back when it is due."""
        self.rescan()
        self._tasks.spawn(self._bring_back(), "delayed retries")
        self._tasks.spawn(self._prune(), "dedupe window")

    def rescan(self) -> int:
        """Schedule rows of the delayed queue not scheduled yet; how many."""
        rows = self.db.execute("SELECT key, due FROM delayed").fetchall()
        new = [(due, key) for key, due in rows if key not in self._scheduled]
        for due, key in new:
            self._schedule(key, due)
        return len(new)

    def _schedule(self, key: int, due: float) -> None:
        self._scheduled.add(key)
        heapq.heappush(self._due, (due, key))
        self._wake.set()

    async def _bring_back(self) -> None:
        while True:
            self._wake.clear()
            while self._due and self._due[0][0] <= time.time():
                _, key = heapq.heappop(self._due)
                self._scheduled.discard(key)
                await self._retry(key)
            wait = self._due[0][0] - time.time() if self._due else None
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _retry(self, key: int) -> None:
        row = self.db.execute("SELECT sender, id, topic, content_type, body, attempts, rounds, "
                              "first_at FROM delayed WHERE key = ?", (key,)).fetchone()
        if row is None:
            return  # purged meanwhile
        sender, stored_id, topic, content_type, body, attempts, rounds, first_at = row
        job = Job(sender, wire_id(stored_id), topic, content_type, body, acknowledge=False,
                  attempts=attempts, rounds=rounds, delayed_key=key, first_at=first_at)
        if job.key in self._busy:
            self._schedule(key, time.time() + _RETRY_SOON)  # a copy is being handled now
            return
        route, codec = self.routes.get(topic), self.codecs.get(content_type)
        self._take(job)
        if route is None:
            self._dead(job, f"no app on this node handles topic {topic!r} any more")
            return
        if codec is None:
            self._dead(job, f"no codec for {content_type} is loaded any more")
            return
        try:
            value = codec.decode(body)
        except CodecError as exc:
            self._dead(job, f"poison message: the body cannot be decoded as {content_type}: "
                            f"{exc}")
            return
        waiting = self._enqueue(job, value, route)
        if waiting is not None:
            await waiting

    async def _prune(self) -> None:
        while True:
            # In the writer thread, beside the other writes: a week of ids is no stall.
            try:
                forgotten = await self.committer.write(self.dedupe.prune)
            except StoreError as exc:
                log.warning("could not forget old message ids (will try again): %s", exc)
                forgotten = 0
            if forgotten:
                log.debug("forgot %d message ids older than the dedupe window", forgotten)
            await asyncio.sleep(min(self.dedupe.window / 10, _PRUNE_EVERY))

    async def close(self) -> None:
        """Stop bringing messages back (they stay in the delayed queue for the next run)."""
        await self._tasks.close()

    def flush_logs(self) -> None:
        """Log the counts the rate-limited lines held back (after the last commit)."""
        for limited in (self._failures, self._parked, self._dead_lines):
            limited.flush()


def _stored(channel: Channel | None) -> bool:
    return channel is not None and channel.stored


def _fields(job: Job) -> dict[str, str]:
    """What a line about ``job`` is about, for JSON logs (it may be logged outside the
    handler's context: a commit's callback)."""
    return {"peer": job.peer, "topic": job.topic, "message_id": format(job.message_id, "016x")}
