"""Delivery counters per topic, for ``p2phost peers --stats`` (and the node's metrics).

Every message a node gives up on is counted under ``dropped`` with its reason (and
logged by whoever dropped it): nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: The counters of a topic, in the order ``peers --stats`` shows them.
COUNTERS = ("sent", "resent", "acked", "handled", "failed", "retried", "dead_lettered",
            "duplicates", "dropped")


class DeliveryStats:
    """Counters by topic, plus node-wide ones (acknowledgements for unknown messages)."""

    def __init__(self) -> None:
        self._topics: dict[str, Counter[str]] = {}
        #: Why messages were dropped, by reason.
        self.drop_reasons: Counter[str] = Counter()
        #: Acknowledgements for message ids this node is not waiting for (ignored).
        self.unknown_acks = 0

    def add(self, topic: str, counter: str, count: int = 1) -> None:
        """Add ``count`` to ``counter`` of ``topic``."""
        counters = self._topics.get(topic)
        if counters is None:
            counters = self._topics[topic] = Counter()
        counters[counter] += count

    def drop(self, topic: str, reason: str) -> None:
        """Count one message of ``topic`` dropped for ``reason`` (the caller logs it)."""
        self.add(topic, "dropped")
        self.drop_reasons[reason] += 1

    def get(self, topic: str, counter: str) -> int:
        """The value of ``counter`` of ``topic``."""
        counters = self._topics.get(topic)
        return 0 if counters is None else counters[counter]

    def snapshot(self) -> dict[str, Any]:
        """Every counter, as JSON data."""
        return {
            "topics": {topic: {name: counters[name] for name in COUNTERS}
                       for topic, counters in sorted(self._topics.items())},
            "unknown_acks": self.unknown_acks,
            "drop_reasons": dict(self.drop_reasons),
        }
