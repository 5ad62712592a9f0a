"""Gossip pub/sub for p2phost: a mesh per topic carrying an epidemic broadcast tree."""

from __future__ import annotations

from ._cache import MessageCache, SeenCache
from ._messages import InvalidFrame, check_message, make_message, message_id
from ._router import GossipMessage, Router, Validator, Wire
from ._score import PeerScores
from ._settings import GossipSettings

__all__ = [
    "GossipMessage",
    "GossipSettings",
    "InvalidFrame",
    "MessageCache",
    "PeerScores",
    "Router",
    "SeenCache",
    "Validator",
    "Wire",
    "check_message",
    "make_message",
    "message_id",
]
