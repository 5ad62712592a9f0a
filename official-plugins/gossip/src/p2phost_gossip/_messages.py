"""Gossip messages: content-addressed ids, origin signatures, and the checks a received
frame must pass."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from p2phost_sdk import is_peer_id, plugin_payload, verify

#: The plugin name origin signatures are made under (``PluginContext.sign``).
SIGNING_NAME = "gossip"
#: Signs a message digest with the origin's key (the node's ``PluginContext.sign``).
Signer = Callable[[bytes], bytes]

#: Frame ``op`` values (docs/wire.md section 6).
OPS = frozenset({"subscribe", "unsubscribe", "graft", "prune", "lazy", "ihave", "iwant", "msg"})


class InvalidFrame(Exception):
    """A frame this router refuses; the text says why (and is the counter's reason)."""


def message_digest(topic: str, origin: str, seq: int, data: Any) -> bytes:
    """SHA-256 over a message's topic, origin, sequence number and data (canonical JSON)."""
    canonical = json.dumps([topic, origin, seq, data], sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


def message_id(topic: str, origin: str, seq: int, data: Any) -> str:
    """The id of a message: the first 32 hex digits of :func:`message_digest`."""
    return message_digest(topic, origin, seq, data).hex()[:32]


def make_message(topic: str, origin: str, seq: int, data: Any,
                 sign: Signer | None = None) -> dict[str, Any]:
    """A ``msg`` frame, its id computed, signed by its origin when ``sign`` is given."""
    digest = message_digest(topic, origin, seq, data)
    frame = {"op": "msg", "topic": topic, "origin": origin, "seq": seq, "data": data,
             "id": digest.hex()[:32]}
    if sign is not None:
        frame["sig"] = base64.b64encode(sign(digest)).decode()
    return frame


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


def check_message(frame: dict[str, Any], max_data: int) -> tuple[str, bytes]:
    """The id and digest of a ``msg`` frame whose id matches its content, else
    InvalidFrame (its signature is checked apart: :func:`check_signature`)."""
    origin, seq = frame.get("origin"), frame.get("seq")
    if not isinstance(origin, str) or not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidFrame("origin or seq of the wrong type")
    if len(json.dumps(frame.get("data"))) > max_data:
        raise InvalidFrame("data too large")
    digest = message_digest(frame["topic"], origin, seq, frame.get("data"))
    expected = digest.hex()[:32]
    if frame.get("id") != expected:
        raise InvalidFrame("id does not match the content")
    return expected, digest


def check_signature(frame: dict[str, Any], digest: bytes, *, required: bool) -> None:
    """InvalidFrame unless the origin signed ``digest`` (an unsigned frame passes only
    when signatures are not ``required``)."""
    sig = frame.get("sig")
    if sig is None:
        if required:
            raise InvalidFrame("not signed by its origin")
        return
    if not isinstance(sig, str) or len(sig) > 100:
        raise InvalidFrame("malformed signature")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidFrame("malformed signature") from None
    origin = frame["origin"]
    if not is_peer_id(origin):
        raise InvalidFrame("origin is not a peer id")
    if not verify(origin, signature, plugin_payload(SIGNING_NAME, digest)):
        raise InvalidFrame("bad origin signature")


class Wire(Protocol):
    """Sends one frame to a connected peer without waiting (it may drop it, bounded)."""

    def send(self, peer_id: str, frame: dict[str, Any]) -> None:
        """Queue ``frame`` for ``peer_id``."""
        ...


@dataclass(frozen=True)
class GossipMessage:
    """A message delivered to this node's subscribers."""

    topic: str
    origin: str
    seq: int
    data: Any
    id: str
    #: The peer it arrived from (the origin itself, or a relaying peer).
    sender: str


#: Says whether ``data`` is a valid message of ``topic``; an invalid one costs its sender.
Validator = Callable[[str, Any], bool]
