"""Gossip pub/sub for p2phost: a mesh per topic carrying an epidemic broadcast tree."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import App, PluginContext, hookimpl

from ._cache import MessageCache, SeenCache
from ._messages import (
    SIGNING_NAME,
    GossipMessage,
    InvalidFrame,
    Signer,
    Validator,
    Wire,
    check_message,
    check_signature,
    make_message,
    message_id,
)
from ._plugin import TOPIC, GossipApp, Subscriber, gossip_of, settings_of
from ._router import Router
from ._score import PeerScores
from ._settings import GossipSettings

__all__ = [
    "SIGNING_NAME",
    "TOPIC",
    "GossipApp",
    "GossipMessage",
    "GossipSettings",
    "InvalidFrame",
    "MessageCache",
    "PeerScores",
    "Router",
    "SeenCache",
    "Signer",
    "Subscriber",
    "Validator",
    "Wire",
    "check_message",
    "check_signature",
    "gossip_of",
    "make_message",
    "message_id",
    "p2phost_apps",
    "settings_of",
]


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The gossip app, configured by ``[config.gossip]``."""
    return [GossipApp(context.config, plugin=context.name, peer_id=context.peer_id,
                      sign=context.sign)]
