"""Acknowledged delivery for one node: which topics, and the parts that carry it out.

Each node resolves the delivery of every topic from what its apps declare and
``[delivery.TOPIC]`` in p2phost.toml, and tells its peers in the hello which topics it
handles with acknowledgements (``"delivery": {"orders": "effectively-once"}``). The
receiver decides: a message goes through the outbox when the peer handling it said its
topic is acknowledged, or, while the peer is not connected, when this node declares
the topic acknowledged itself. Everything else keeps the plain (at-most-once) path,
which this module does not touch.

Parts: the :class:`~._outbox.Outbox` (sending), the :class:`~._receiver.Receiver`
(handling, retries, dead letters), ACK frames (:mod:`._acks`), the delivery database
(:mod:`._store`), and the counters (:mod:`._stats`). See docs/delivery.md.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from p2phost_sdk import (
    App,
    Codec,
    Delivery,
    DeliveryMode,
    FrameTooLarge,
    PeerUnavailable,
    is_peer_id,
)

from ..._delivery_settings import DeliverySettings
from .._limited import WarnedOnce
from ..messaging._routes import Route, TraceHook
from ..messaging._stats import DeliveryStats
from ..wire._channel import Ack, Channel
from ..wire._envelope import HEADER, Envelope
from ._acks import AckSender, acked_ids
from ._appstate import AppState
from ._committer import Committer
from ._deadletter import DeadLetter, DeadLetters, DeadLines
from ._dedupe import Dedupe
from ._injournal import OutcomeJournal
from ._journal import Journal
from ._journals import open_journals
from ._outbox import Outbox, key_id
from ._outjournal import JournalRows
from ._receiver import Receiver
from ._redial import Dialled, Redial
from ._store import open_connections, store_error

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("p2phost.delivery")
_ACKNOWLEDGED = frozenset({DeliveryMode.AT_LEAST_ONCE.value, DeliveryMode.EFFECTIVELY_ONCE.value})


def resolve_policies(apps: Sequence[App], settings: DeliverySettings) -> dict[str, Delivery]:
    """The delivery of every topic that is not at-most-once: apps' declarations (a
    handler's own wins over another app's mapping), then the manifest's overrides."""
    declared: dict[str, Delivery] = {}
    owned: dict[str, Delivery] = {}
    for app in apps:
        handled = app.handlers()
        for topic, policy in app.deliveries().items():
            (owned if topic in handled else declared)[topic] = policy
    declared.update(owned)
    policies = {t: settings.policy(t, declared.get(t)) for t in {*declared, *settings.topics}}
    return {t: p for t, p in policies.items() if p.acknowledged}


class NodeLink(Protocol):
    """What acknowledged delivery needs from the node (its dialler provides it)."""

    local_peer_id: str

    def usable(self, peer_id: str) -> Channel | None:
        """The channel new messages to ``peer_id`` go on, if connected."""

    def reply_channel(self, peer_id: str) -> Channel | None:
        """Any open channel to ``peer_id`` (for ACK frames)."""

    def peer_at(self, address: str) -> str | None:
        """The peer id last reached at ``address``."""

    def check_address(self, address: str) -> None:
        """Raise a clear error for an address no transport plugin serves."""

    def keep_connected(self, address: str) -> None:
        """Dial ``address`` and keep it connected."""

    def keep_peer(self, peer_id: str, addresses: Sequence[str]) -> None:
        """Keep dialling ``peer_id`` at ``addresses`` (with the dialler's backoff)."""

    def release_peer(self, peer_id: str) -> None:
        """Stop dialling ``peer_id`` for the outbox (an open connection stays)."""

    @property
    def targets(self) -> Dialled:
        """The peers being dialled (discovery's finds among them)."""


class Reliable:
    """Acknowledged delivery for one node (created by the node; started with it)."""

    def __init__(self, link: NodeLink, *, ids: Iterator[int], apps: Sequence[App],
                 codecs: Mapping[str, Codec], settings: DeliverySettings,
                 path: Path | None, stats: DeliveryStats, max_frame_size: int) -> None:
        self.link = link
        self._ids = ids
        self.max_frame_size = max_frame_size
        self.settings = settings
        self.path = path
        self.codecs = codecs
        self.stats = stats
        #: Acknowledged topics of this node, with their delivery.
        self.policies = resolve_policies(apps, settings)
        handled = {topic for app in apps for topic in app.handlers()}
        #: The acknowledged topics this node handles.
        self.handled = {t: p for t, p in self.policies.items() if t in handled}
        self.apps = {topic: type(app).name or type(app).__name__
                     for app in apps for topic in app.handlers()}
        #: Topics whose sends come here: this node's, and those its connected peers
        #: announce acknowledged (the node tests this very set, so it changes in place).
        self.topics: set[str] = set(self.policies)
        # Per open channel, the acknowledged topics its peer announced (only of the
        # topics its hello lists, which are bounded); per topic, how many channels did.
        # Forgotten when the channel ends: a peer making up identities holds nothing.
        self._modes: dict[Channel, frozenset[str]] = {}
        self._announced: Counter[str] = Counter()
        self._warned = WarnedOnce()
        # Payloads a foreign publisher sends that cannot be delivered: per source and topic.
        self._dead_lines = DeadLines(log)
        self.db: sqlite3.Connection | None = None
        self.dead: DeadLetters | None = None
        self._committer: Committer | None = None
        self._outbox: Outbox | None = None
        self._redial: Redial | None = None
        self._receiver: Receiver | None = None
        self._acks: AckSender | None = None
        self._journal: JournalRows | None = None
        self._outcomes: OutcomeJournal | None = None
        #: The journals start opened (the parts above use them; close() closes them).
        self._opened: list[Journal] = []
        #: Traces, set by the node when OpenTelemetry is on (passed on to the outbox).
        self.tracer: TraceHook | None = None

    def hello_extra(self) -> dict[str, Any]:
        """What the hello says about this node's acknowledged topics."""
        if not self.handled:
            return {}
        return {"delivery": {t: DeliveryMode(p.mode).value for t, p in self.handled.items()}}

    # -- lifetime --------------------------------------------------------------------

    @property
    def acknowledged(self) -> frozenset[str]:
        """The topics this node handles with acknowledgements (their messages come here)."""
        return frozenset(self.handled)

    def start(self, routes: Mapping[str, Route]) -> None:
        """Open the delivery database and start the outbox and the delayed retries."""
        new = self.path is not None and not self.path.exists()
        db, writer, quick = open_connections(self.path)
        journals: tuple[Journal, Journal | None] | None = None
        if self.path is not None:
            try:
                journals = open_journals(self.path, writer, handles=bool(self.handled),
                                         new=new)
            except BaseException as exc:
                for connection in (db, writer, quick):
                    connection.close()
                if isinstance(exc, sqlite3.DatabaseError):  # a page only replay reads
                    raise store_error(self.path, exc) from exc
                raise
        # Closed by close() whatever _begin handed on (the node closes this after a
        # failed start): one left open would keep its lock, and a start again in this
        # process would find the journal "in use by another node".
        self._opened = [j for j in journals or () if j is not None]
        try:
            self._begin(db, writer, quick, journals, routes)
        except BaseException as exc:
            if self._committer is None:  # else its close() closes them
                for connection in (writer, quick):
                    connection.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise store_error(self.path, exc) from exc
            raise

    def _begin(self, db: sqlite3.Connection, writer: sqlite3.Connection,
               quick: sqlite3.Connection, journals: tuple[Journal, Journal | None] | None,
               routes: Mapping[str, Route]) -> None:
        self.db = db
        committer = self._committer = Committer(db, writer, quick)
        self.dead = DeadLetters(db, limit=self.settings.dead_letter_limit,
                                keep=self.settings.dead_letter_keep)
        dedupe = Dedupe(db, window=self.settings.dedupe_window)
        if journals is not None:
            self._journal = JournalRows(journals[0], committer)
            if journals[1] is not None:
                self._outcomes = OutcomeJournal(journals[1], committer, dedupe)
        self._acks = AckSender(self._ids.__next__, self.link.reply_channel)
        self._outbox = Outbox(committer=committer, dead=self.dead, stats=self.stats,
                              settings=self.settings, codecs=self.codecs,
                              usable=self.link.usable, acknowledged_by=self.acknowledged_by,
                              journal=self._journal)
        self._outbox.tracer = self.tracer
        redial = self._redial = Redial(self.link, committer, self._outbox.queries)
        self._outbox.settled = redial.settled
        self._receiver = Receiver(committer=committer, dedupe=dedupe, state=AppState(db),
                                  dead=self.dead, stats=self.stats, policies=self.handled,
                                  apps=self.apps, routes=routes,
                                  codecs=self.codecs, acknowledge=self._acks.add)
        self._receiver.outcomes = self._outcomes
        self._receiver.start()
        waiting = self._outbox.queries.destinations()
        for dest in waiting:
            if "://" in dest:  # sent before its peer was known: keep dialling it
                self.link.keep_connected(dest)
        # Peer ids: dialled at the addresses saved with their messages.
        redial.start(db, waiting)
        if waiting:
            log.info("the outbox holds %d messages for %d peers (%d dialled where they were "
                     "last reached): they go out as the peers connect",
                     self._outbox.queries.count(), len(waiting),
                     len(redial.kept) + sum("://" in d for d in waiting))

    async def drain(self, timeout: float) -> None:
        """At shutdown: give connected peers time to acknowledge what they were sent (up
        to ``timeout`` seconds when the outbox is in memory, a moment when it is kept)."""
        if self._outbox is None:
            return
        left = await self._outbox.drain(timeout if self.path is None else min(timeout, 1.0))
        if left and self.path is None:
            log.warning("%d messages were not acknowledged before shutdown, and this node "
                        "keeps no outbox on disk: they are lost", left)
            for (topic,) in self._outbox.db.execute("SELECT topic FROM outbox"):
                self.stats.drop(topic, "unacknowledged at shutdown without a state directory")
        elif left:
            log.info("%d messages wait in the outbox (%s) for their peers: they go out when "
                     "the node runs again", left, self.path)

    async def close(self) -> None:
        """Stop the pumps and delayed retries, commit and send what is pending."""
        if self._redial is not None:
            self._redial.flush_logs()
        self._redial = None  # nothing is dialled for the outbox any more (its database closes)
        if self._receiver is not None:
            await self._receiver.close()
        if self._outbox is not None:
            await self._outbox.close()
        if self._committer is not None:
            await self._committer.close()
        # After the last commit: its outcomes' lines are in the counts.
        for part in (self._receiver, self._outbox):
            if part is not None:
                part.flush_logs()
        self._dead_lines.flush()
        for opened in self._opened:  # (those not handed on yet too, after a failed start)
            opened.close()
        self._opened = []
        self._journal = self._outcomes = None
        if self._acks is not None:
            self._acks.close()
        if self.db is not None:
            self.db.close()
            self.db = None

    # -- peers -----------------------------------------------------------------------

    def connected(self, channel: Channel) -> None:
        """A channel opened: learn the peer's acknowledged topics; start its pump."""
        modes = channel.hello.extra.get("delivery", {})
        if not isinstance(modes, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in modes.items()):
            log.warning("%s announced malformed delivery modes (ignored): %.200r",
                        channel.peer_id, modes)
            modes = {}
        # A mode for a topic the hello does not list is of no use (nothing is sent to a
        # peer on a topic it does not handle): left out, so the hello's bound holds.
        listed = channel.topics
        acked = frozenset(t for t, mode in modes.items() if mode in _ACKNOWLEDGED and t in listed)
        self._forget(channel)
        self._modes[channel] = acked
        self._announced.update(acked)
        self.topics.update(acked)
        if self._redial is not None:
            self._redial.connected(channel)
        if self._outbox is not None:
            self._outbox.connected(channel.peer_id, [channel.address, *channel.hello.listen])

    def disconnected(self, channel: Channel) -> None:
        """A channel ended: what its peer announced goes with it."""
        self._forget(channel)
        if self._outbox is not None:
            self._outbox.wake(channel.peer_id)
        if self._redial is not None:
            self._redial.disconnected(channel.peer_id)

    def _forget(self, channel: Channel) -> None:
        for topic in self._modes.pop(channel, ()):
            self._announced[topic] -= 1
            if not self._announced[topic]:
                del self._announced[topic]
                if topic not in self.policies:
                    self.topics.discard(topic)

    def acknowledged_by(self, channel: Channel, topic: str) -> bool:
        """Whether the peer of ``channel`` handles ``topic`` with acknowledgements."""
        return topic in self._modes.get(channel, ())

    # -- sending ---------------------------------------------------------------------

    async def send(self, peer: str, topic: str, body: Any, key: str | None) -> bool:
        """Send through the outbox if ``topic`` is acknowledged for ``peer``; False
        when the message takes the plain path instead."""
        link, own = self.link, self.policies.get(topic)
        if self._outbox is None or self.db is None:
            raise PeerUnavailable("the node is not running")
        address = "://" in peer
        peer_id = link.peer_at(peer) if address else peer
        channel = link.usable(peer_id) if peer_id else None
        if channel is not None:
            if not self.acknowledged_by(channel, topic) and (own is None
                                                             or topic in channel.topics):
                if own is not None:
                    self._warn_unacknowledged(channel.peer_id, topic)
                return False
            dest, codec = channel.peer_id, channel.codec
        elif own is None:
            return False
        else:
            dest, codec = peer, next(iter(self.codecs.values()))
            if address:
                link.check_address(peer)
                link.keep_connected(peer)
            elif peer == link.local_peer_id:
                raise PeerUnavailable("a node cannot send to itself")
            elif not is_peer_id(peer):
                raise PeerUnavailable(f"{peer!r} is neither a peer id nor an address (such "
                                      "as tcp://HOST:PORT)")
        data = codec.encode(body)
        size = HEADER.size + len(topic.encode()) + len(data)
        if size > self.max_frame_size:
            raise FrameTooLarge(f"a message on {topic!r} is {size} bytes, over the maximum "
                                f"frame size of {self.max_frame_size} (max-frame-size "
                                "in [node] of p2phost.toml)")
        message_id = key_id(key) if key is not None else next(self._ids)
        put = functools.partial(self._outbox.put, dest, topic, data, codec.content_type,
                                message_id)
        if self._redial is not None and "://" not in dest:
            # Where to dial it, should it be lost (or this node restart).
            await self._redial.put(dest, put)
        else:
            await put()
        return True

    def owes(self, peer: str) -> bool:
        """Whether the outbox holds (or is taking in) a message for ``peer``; True while
        the outbox is not running (nothing is known)."""
        return self._redial is None or self._redial.owes(peer)

    def keeps(self, peer: str) -> bool:
        """Whether the outbox owes ``peer`` messages (:meth:`owes`) or keeps it as a dial
        target; True while the outbox is not running."""
        return self._redial is None or peer in self._redial.kept or self._redial.owes(peer)

    def acknowledged_to(self, peer: str, topic: str) -> bool:
        """Whether messages on ``topic`` to the connected ``peer`` are acknowledged."""
        channel = self.link.usable(peer)
        return channel is not None and self.acknowledged_by(channel, topic)

    async def settle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for connected peers to acknowledge everything;
        how many messages are still unacknowledged."""
        return 0 if self._outbox is None else await self._outbox.drain(timeout)

    def _warn_unacknowledged(self, peer: str, topic: str) -> None:
        if self._warned.first(peer, topic):
            log.warning("%s handles topic %r without acknowledgements (at-most-once): messages "
                        "to it go once, unacknowledged", peer, topic)

    async def publish(self, channels: Iterable[Channel], topic: str,
                      body: Any) -> tuple[int, list[Channel]]:
        """Publish through the outbox to the peers of ``channels`` that handle ``topic``
        with acknowledgements; how many, and the channels that take it plainly."""
        if self._outbox is None or self.db is None:
            raise PeerUnavailable("the node is not running")
        plain: list[Channel] = []
        count = 0
        message_id = next(self._ids)
        for channel in channels:
            if topic not in channel.topics:
                continue
            if not self.acknowledged_by(channel, topic):
                plain.append(channel)
                continue
            put = functools.partial(self._outbox.put, channel.peer_id, topic,
                                    channel.codec.encode(body), channel.codec.content_type,
                                    message_id)
            if self._redial is not None:
                await self._redial.put(channel.peer_id, put)
            else:
                await put()
            count += 1
        return count, plain

    async def bury(self, topic: str, body: bytes, *, source: str, reason: str,
                   content_type: str = "") -> int:
        """Store a payload that never became a message (a bridge's foreign payload that
        does not decode) in the dead-letter store; its id once committed (0: the full
        store dropped it)."""
        if self.dead is None or self._committer is None:
            raise PeerUnavailable("the node is not running")
        if len(body) > self.max_frame_size:
            # A foreign broker's payload may be far larger than any message: keep what a
            # message could hold, so a hostile publisher cannot grow the store per letter.
            reason = f"{reason} (first {self.max_frame_size} of {len(body)} bytes kept)"
            body = body[:self.max_frame_size]
        now = time.time()
        letter = DeadLetter(0, "in", source, next(self._ids), topic, content_type, body, 0,
                            reason, "", "", now, now)
        dead = self.dead
        letter_id, dropped = await self._committer.write(lambda db: dead.add(db, letter))
        self._dead_lines.dropped(dead, dropped, self.stats)
        if letter_id:
            self._dead_lines.log((source, topic),
                                 "a payload from %s for %r went to the dead-letter store as "
                                 "#%d: %s (see `p2phost dead show %d`)", source, topic,
                                 letter_id, reason, letter_id)
        return int(letter_id)

    # -- receiving (the dispatcher's seams) ------------------------------------------

    def receive(self, channel: Channel, envelope: Envelope, ack: Ack | None,
                route: Route) -> Awaitable[None] | None:
        """A MESSAGE on an acknowledged topic this node handles."""
        assert self._receiver is not None, "the node is not started"
        return self._receiver.receive(channel, envelope, ack, route)

    def refuse(self, channel: Channel, envelope: Envelope, ack: Ack, reason: str) -> None:
        """Dead-letter a message the node will not handle (a stored one from a peer the
        trust policy refuses, or one no codec reads), then acknowledge it to the medium."""
        assert self._receiver is not None, "the node is not started"
        self._receiver.refuse(channel, envelope, ack, reason)

    def on_ack(self, channel: Channel, envelope: Envelope) -> None:
        """An ACK frame from ``channel``'s peer."""
        ids = acked_ids(envelope)
        if self._outbox is None:
            self.stats.unknown_acks += len(ids)
            return
        self._outbox.acked(channel.peer_id, ids)

    # -- operators (the control socket) ----------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Counters and queue sizes, as JSON data."""
        answer = self.stats.snapshot()
        if self.db is not None and self._outbox is not None:
            rows = self._outbox.queries.by_topic()
            answer["outbox"] = {topic: count for topic, (count, _) in rows.items()}
            answer["outbox_oldest"] = {topic: max(0.0, time.time() - oldest)
                                       for topic, (_, oldest) in rows.items()}
            answer["delayed"] = dict(self.db.execute(
                "SELECT topic, COUNT(*) FROM delayed GROUP BY topic").fetchall())
            answer["dead"] = dict(self.db.execute(
                "SELECT topic, COUNT(*) FROM dead GROUP BY topic").fetchall())
        answer["modes"] = {t: DeliveryMode(p.mode).value for t, p in self.policies.items()}
        return answer

    async def retry_dead(self, ids: Sequence[int], topic: str | None) -> int:
        """Put dead letters back where they failed (all of ``topic`` when ``ids`` is
        empty); how many."""
        if self.dead is None or self._committer is None:
            return 0
        letters = self.dead.select(ids, topic)
        if letters:
            # From the outbox's own numbers: journalled messages hold some not in the table yet.
            seqs = None if self._journal is None else self._journal.seqs
            await self._committer.write(lambda db: DeadLetters.requeue(db, letters, seqs))
        assert self._receiver is not None and self._outbox is not None
        self._receiver.rescan()
        for letter in letters:
            if letter.direction == "out":
                self._outbox.wake(letter.peer)
                if self._redial is not None:  # a peer not connected is dialled for them
                    self._redial.disconnected(letter.peer)
        return len(letters)


# -- the control socket's delivery commands (``p2phost peers --stats``, ``dead retry``) -----

async def _stats(reliable: Reliable, request: Mapping[str, Any]) -> dict[str, Any]:
    return reliable.snapshot()


async def _dead_retry(reliable: Reliable, request: Mapping[str, Any]) -> dict[str, Any]:
    ids, topic = request.get("ids", []), request.get("topic")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) \
            or not isinstance(topic, str | None):
        return {"error": "dead-retry takes ids (a list of numbers) and a topic"}
    return {"retried": await reliable.retry_dead(ids, topic)}


#: Control socket commands: name -> handler(reliable, request) -> answer.
CONTROL_COMMANDS: dict[str, Callable[[Reliable, Mapping[str, Any]],
                                     Awaitable[dict[str, Any]]]] = {
    "stats": _stats,
    "dead-retry": _dead_retry,
}
