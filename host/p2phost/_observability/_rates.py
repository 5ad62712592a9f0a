"""What ``p2phost top`` shows: two snapshots of the node's counters (the control socket's
``stats``) turned into rates per second, per peer and per topic. The JSON shape is
documented in docs/cli.md (``p2phost top --once --json``)."""

from __future__ import annotations

from typing import Any


def _sum(by_topic: dict[str, dict[str, int]], key: str) -> int:
    return sum(values.get(key, 0) for values in by_topic.values())


def _rate(after: int, before: int, seconds: float) -> float:
    return round(max(after - before, 0) / seconds, 2) if seconds > 0 else 0.0


def view(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The live view: rates over the ``seconds`` between the snapshots, and the queues
    as they are in ``after``."""
    was, now = before.get("by_peer", {}), after.get("by_peer", {})
    peers = []
    for link in after.get("links", []):
        peer = link["peer_id"]
        old, new = was.get(peer, {}), now.get(peer, {})
        peers.append({
            "peer_id": peer, "address": link.get("address", ""),
            "transport": link.get("transport", ""), "security": link.get("security", ""),
            # The last keepalive round trip (PING to PONG, behind what was queued).
            "rtt_ms": link.get("rtt_ms"),
            "in_per_s": _rate(_sum(new, "received"), _sum(old, "received"), seconds),
            "out_per_s": _rate(_sum(new, "sent"), _sum(old, "sent"), seconds),
        })
    topics = []
    old_topics, new_topics = before.get("topics", {}), after.get("topics", {})
    modes = after.get("modes", {})
    for topic in sorted(set(new_topics) | set(modes)):
        old, new = old_topics.get(topic, {}), new_topics.get(topic, {})

        def rate(key: str, old: dict[str, int] = old, new: dict[str, int] = new) -> float:
            return _rate(new.get(key, 0), old.get(key, 0), seconds)

        topics.append({
            "topic": topic, "mode": modes.get(topic, "at-most-once"),
            "in_per_s": rate("received"), "out_per_s": rate("sent"),
            "handled_per_s": rate("handled"), "failed_per_s": rate("failed"),
            "failed": new.get("failed", 0), "dropped": new.get("dropped", 0),
            "dead_lettered": new.get("dead_lettered", 0),
            "outbox": after.get("outbox", {}).get(topic, 0),
            "dead_letters": after.get("dead", {}).get(topic, 0),
        })
    return {
        "interval_s": round(seconds, 3),
        "peers": peers,
        "topics": topics,
        "mailboxes": [{"app": app, **box} for app, box in
                      sorted(after.get("mailboxes", {}).items())],
        "outbox": sum(after.get("outbox", {}).values()),
        "outbox_oldest_s": round(max(after.get("outbox_oldest", {}).values(), default=0.0), 3),
        "dead_letters": sum(after.get("dead", {}).values()),
        "connections": after.get("connections", {}),
    }
