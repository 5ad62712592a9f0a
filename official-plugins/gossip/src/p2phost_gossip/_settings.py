"""Gossip's parameters (``[config.gossip]``), with GossipSub's names where they match."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GossipSettings:
    """Mesh degree, caches, timers and score thresholds of one node's gossip router."""

    #: Mesh peers per topic the heartbeat aims for (GossipSub's D), and its bounds.
    d: int = 8
    d_low: int = 6
    d_high: int = 12
    #: Seconds between heartbeats (mesh upkeep, IHAVE batches, repair timers).
    heartbeat: float = 1.0
    #: Seconds an IHAVE'd message may stay missing before this node IWANTs it (and grafts
    #: the announcer's link back to eager: Plumtree's timer).
    graft_timeout: float = 0.5
    #: Heartbeats a message stays in the cache IWANT is answered from.
    history: int = 5
    #: Message ids remembered to drop duplicates (oldest forgotten first).
    seen_size: int = 20_000
    #: Seconds a fan-out set (topics published to but not subscribed) lives unused.
    fanout_ttl: float = 60.0
    #: Seconds a pruned peer may not be grafted again.
    prune_backoff: float = 60.0
    #: Largest ``data`` of one message, in bytes of its JSON.
    max_data: int = 256 * 1024
    #: Ids in one IHAVE or IWANT.
    max_ids: int = 500
    #: Score lost per invalid message, per duplicate after this node asked for lazy.
    invalid_penalty: float = 10.0
    duplicate_penalty: float = 1.0
    #: Below this score a peer is pruned from every mesh and not grafted.
    prune_threshold: float = -20.0
    #: Below this score everything from a peer is dropped unread (and counted).
    graylist_threshold: float = -80.0
    #: Each heartbeat a score moves this fraction of the way back to 0.
    decay: float = 0.05
    #: Refuse messages their origin did not sign (a forwarder cannot forge or alter one).
    require_signatures: bool = True

    def check(self) -> list[tuple[str, str]]:
        """(field, what it must be) for each bad field; empty when all are fine."""
        bad: list[tuple[str, str]] = []
        if not 1 <= self.d_low <= self.d <= self.d_high:
            bad.append(("d", f"a whole number with 1 <= d-low ({self.d_low}) <= d <= "
                             f"d-high ({self.d_high})"))
        for name in ("heartbeat", "graft_timeout", "fanout_ttl", "prune_backoff"):
            if getattr(self, name) <= 0:
                bad.append((name.replace("_", "-"), "a positive number of seconds"))
        for name in ("history", "seen_size", "max_data", "max_ids"):
            if getattr(self, name) < 1:
                bad.append((name.replace("_", "-"), "a whole number of at least 1"))
        return bad
