"""Peer scores: invalid messages and duplicate floods cost, good behaviour decays back to 0."""

from __future__ import annotations

from collections import Counter


class PeerScores:
    """One score per peer; below a threshold a peer is pruned, further down graylisted."""

    def __init__(self, prune_threshold: float, graylist_threshold: float,
                 decay: float) -> None:
        self.prune_threshold = prune_threshold
        self.graylist_threshold = graylist_threshold
        self.decay = decay
        self._scores: dict[str, float] = {}
        #: Penalties by peer and reason (what tests and operators read).
        self.penalties: Counter[tuple[str, str]] = Counter()

    def score(self, peer_id: str) -> float:
        """The peer's score (0 when it never misbehaved)."""
        return self._scores.get(peer_id, 0.0)

    def penalise(self, peer_id: str, reason: str, amount: float) -> None:
        """Lower ``peer_id``'s score by ``amount`` for ``reason``."""
        self._scores[peer_id] = self.score(peer_id) - amount
        self.penalties[(peer_id, reason)] += 1

    def prunable(self, peer_id: str) -> bool:
        """True when the peer must leave every mesh and not be grafted."""
        return self.score(peer_id) < self.prune_threshold

    def graylisted(self, peer_id: str) -> bool:
        """True when everything from the peer is dropped unread."""
        return self.score(peer_id) < self.graylist_threshold

    def tick(self) -> None:
        """A heartbeat: every score moves ``decay`` of the way back to 0."""
        for peer_id, value in list(self._scores.items()):
            value *= 1.0 - self.decay
            if abs(value) < 0.01:
                del self._scores[peer_id]
            else:
                self._scores[peer_id] = value

    def forget(self, peer_id: str) -> None:
        """Drop a peer's positive history; a negative score is kept (no reconnect laundering)."""
        if self.score(peer_id) >= 0:
            self._scores.pop(peer_id, None)
