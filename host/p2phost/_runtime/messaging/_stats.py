"""Delivery counters per topic and peer, for ``p2phost peers --stats``, ``p2phost top``
and the node's Prometheus metrics (docs/operations.md): one set of figures for all three.

Every message a node gives up on is counted under ``dropped`` with its reason (and
logged by whoever dropped it): nothing is dropped silently.

Label cardinality is bounded: the first ``peer_labels`` peers and ``topic_labels`` topics
seen are counted under their own names, later ones under ``other`` (a hostile peer
inventing topic names or peer ids cannot grow the tables).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: The counters of a topic, in the order ``peers --stats`` shows them.
COUNTERS = ("sent", "resent", "received", "acked", "handled", "failed", "retried",
            "dead_lettered", "duplicates", "dropped")
#: Body bytes of app messages, counted beside the messages.
BYTES = ("bytes_sent", "bytes_received")
#: What folded peers and topics are counted under.
OTHER = "other"


class Tally:
    """The counters a message's own path adds to, per (topic, peer): plain attributes,
    as one message's receive path (and send path) has them at hand. Adding to one costs
    about a sixth of adding to a ``Counter`` key, twice per message each way."""

    __slots__ = ("bytes_received", "bytes_sent", "handled", "received", "sent")

    def __init__(self) -> None:
        self.received = self.bytes_received = self.handled = 0
        self.sent = self.bytes_sent = 0


#: The counters a :class:`Tally` holds.
TALLIED = Tally.__slots__
#: Topics whose tallies a channel keeps at hand (``Channel.tallies``); past this many
#: a topic's tally is looked up in the stats per message (still counted, not kept).
TALLIED_TOPICS = 256


class DeliveryStats:
    """Counters by topic and peer, plus node-wide ones (acknowledgements for unknown
    messages). A counter added without a peer is counted under the peer ``""``."""

    def __init__(self, *, peer_labels: int = 32, topic_labels: int = 256) -> None:
        self.peer_labels, self.topic_labels = peer_labels, topic_labels
        self._counts: dict[tuple[str, str], Counter[str]] = {}
        #: (topic, peer) -> its :class:`Tally`, under the labels counted (read per message
        #: by the hot paths: ``tallies.get((topic, peer)) or stats.tally(topic, peer)``).
        self.tallies: dict[tuple[str, str], Tally] = {}
        self._peer_names: set[str] = set()
        self._topic_names: set[str] = set()
        #: Why messages were dropped, by reason.
        self.drop_reasons: Counter[str] = Counter()
        #: Dropped messages by (topic, peer, reason), labels folded as the counters are.
        self.drops: Counter[tuple[str, str, str]] = Counter()
        #: Acknowledgements for message ids this node is not waiting for (ignored).
        self.unknown_acks = 0

    def add(self, topic: str, counter: str, count: int = 1, peer: str = "") -> None:
        """Add ``count`` to ``counter`` of ``topic`` (and ``peer``)."""
        counters = self._counts.get((topic, peer))
        if counters is None:
            counters = self._slot(topic, peer)
        counters[counter] += count

    def _label(self, topic: str, peer: str) -> tuple[str, str]:
        if topic not in self._topic_names:
            if len(self._topic_names) >= self.topic_labels:
                topic = OTHER
            else:
                self._topic_names.add(topic)
        if peer and peer not in self._peer_names:
            if len(self._peer_names) >= self.peer_labels:
                peer = OTHER
            else:
                self._peer_names.add(peer)
        return topic, peer

    def _slot(self, topic: str, peer: str) -> Counter[str]:
        # The first count of a (topic, peer) pair; folded pairs come here every time
        # (never cached under their own names, so the table stays bounded).
        key = self._label(topic, peer)
        counters = self._counts.get(key)
        if counters is None:
            counters = self._counts[key] = Counter()
        return counters

    def tally(self, topic: str, peer: str) -> Tally:
        """The :class:`Tally` of ``topic`` and ``peer`` (folded into ``other`` as the
        counters are: a folded pair is found here every time, never under its names)."""
        tally = self.tallies.get((topic, peer))
        if tally is None:
            key = self._label(topic, peer)
            tally = self.tallies.get(key)
            if tally is None:
                tally = self.tallies[key] = Tally()
        return tally

    def tally_of(self, tallies: dict[str, Tally], topic: str, peer: str) -> Tally:
        """:meth:`tally`, kept in ``tallies`` (a channel's to ``peer``, by topic) while it
        has fewer than ``TALLIED_TOPICS``: the hot paths' ``tallies.get(topic) or
        stats.tally_of(tallies, topic, peer)`` (a tally is never replaced, so one kept
        is always the one the stats show)."""
        tally = self.tally(topic, peer)
        if len(tallies) < TALLIED_TOPICS:
            tallies[topic] = tally
        return tally

    def message_out(self, topic: str, peer: str, size: int) -> None:
        """One app message of ``size`` body bytes sent to ``peer``."""
        tally = self.tallies.get((topic, peer)) or self.tally(topic, peer)
        tally.sent += 1
        tally.bytes_sent += size

    def message_in(self, topic: str, peer: str, size: int) -> None:
        """One app message of ``size`` body bytes received from ``peer``."""
        tally = self.tallies.get((topic, peer)) or self.tally(topic, peer)
        tally.received += 1
        tally.bytes_received += size

    def _merged(self) -> dict[tuple[str, str], Counter[str]]:
        # The counters with the tallies added in (both under the same labels).
        merged = {key: Counter(counters) for key, counters in self._counts.items()}
        for key, tally in self.tallies.items():
            counters = merged.setdefault(key, Counter())
            for name in TALLIED:
                value = getattr(tally, name)
                if value:
                    counters[name] += value
        return merged

    def drop(self, topic: str, reason: str, peer: str = "") -> None:
        """Count one message of ``topic`` dropped for ``reason`` (the caller logs it)."""
        self.add(topic, "dropped", 1, peer)
        self.drop_reasons[reason] += 1
        label_topic, label_peer = self._label(topic, peer)
        self.drops[(label_topic, label_peer, reason)] += 1

    def get(self, topic: str, counter: str) -> int:
        """The value of ``counter`` of ``topic`` (all peers)."""
        return sum(c[counter] for (t, _), c in self._merged().items() if t == topic)

    def snapshot(self) -> dict[str, Any]:
        """Every counter, as JSON data: by topic, and by peer and topic (peer ``""``:
        counted where the peer is not known)."""
        topics: dict[str, Counter[str]] = {}
        peers: dict[str, dict[str, dict[str, int]]] = {}
        for (topic, peer), counters in sorted(self._merged().items()):
            topics.setdefault(topic, Counter()).update(counters)
            peers.setdefault(peer, {})[topic] = {
                name: counters[name] for name in (*COUNTERS, *BYTES) if counters[name]}
        drops: dict[str, dict[str, int]] = {}
        for (topic, _, reason), count in sorted(self.drops.items()):
            by_reason = drops.setdefault(topic, {})
            by_reason[reason] = by_reason.get(reason, 0) + count
        return {
            "topics": {topic: {name: counters[name] for name in (*COUNTERS, *BYTES)}
                       for topic, counters in topics.items()},
            "by_peer": peers,
            "unknown_acks": self.unknown_acks,
            "drop_reasons": dict(self.drop_reasons),
            "drops": drops,
        }
