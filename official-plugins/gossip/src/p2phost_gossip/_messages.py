"""Gossip messages: content-addressed ids, and the checks a received frame must pass."""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Frame ``op`` values (docs/wire.md section 6).
OPS = frozenset({"subscribe", "unsubscribe", "graft", "prune", "lazy", "ihave", "iwant", "msg"})


class InvalidFrame(Exception):
    """A frame this router refuses; the text says why (and is the counter's reason)."""


def message_id(topic: str, origin: str, seq: int, data: Any) -> str:
    """The id of a message: SHA-256 over its topic, origin, sequence number and data."""
    canonical = json.dumps([topic, origin, seq, data], sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def make_message(topic: str, origin: str, seq: int, data: Any) -> dict[str, Any]:
    """A ``msg`` frame, its id computed."""
    return {"op": "msg", "topic": topic, "origin": origin, "seq": seq, "data": data,
            "id": message_id(topic, origin, seq, data)}


def check_frame(frame: Any, max_ids: int) -> dict[str, Any]:
    """``frame`` if its shape is right, else InvalidFrame (a ``msg`` is checked later)."""
    if not isinstance(frame, dict) or frame.get("op") not in OPS:
        raise InvalidFrame("not a gossip frame")
    op = frame["op"]
    if op in ("subscribe", "unsubscribe"):
        topics = frame.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise InvalidFrame("topics is not a list of strings")
    elif op in ("ihave", "iwant"):
        ids = frame.get("ids")
        if (not isinstance(ids, list) or len(ids) > max_ids
                or not all(isinstance(i, str) and len(i) <= 64 for i in ids)):
            raise InvalidFrame("ids is not a bounded list of ids")
    if op in ("graft", "prune", "lazy", "ihave", "msg") and not isinstance(
            frame.get("topic"), str):
        raise InvalidFrame("topic is not a string")
    return frame


def check_message(frame: dict[str, Any], max_data: int) -> str:
    """The id of a ``msg`` frame whose id matches its content, else InvalidFrame."""
    origin, seq = frame.get("origin"), frame.get("seq")
    if not isinstance(origin, str) or not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidFrame("origin or seq of the wrong type")
    if len(json.dumps(frame.get("data"))) > max_data:
        raise InvalidFrame("data too large")
    expected = message_id(frame["topic"], origin, seq, frame.get("data"))
    if frame.get("id") != expected:
        raise InvalidFrame("id does not match the content")
    return expected
