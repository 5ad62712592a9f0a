"""Broker bridge for p2phost: mirrors topics to and from plain broker names.

Configured in ``[config.broker-bridge.mappings.NAME]`` (docs/bridges.md): NATS subjects
and JetStream streams, MQTT topics, Redis channels and streams, RabbitMQ exchanges with
routing keys and PostgreSQL NOTIFY channels, each in or out, with an external codec and,
where the broker allows, acknowledged delivery on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import App, PluginContext, hookimpl

from ._app import INJECTS, STATUS_TOPIC, BridgeApp, BridgeCounts
from ._codecs import CODECS, ExternalCodec
from ._endpoint import MARKER, EchoFilter, Incoming
from ._errors import BrokerUnavailable, MappingError
from ._settings import BridgeMapping, BridgeSettings

__all__ = [
    "CODECS",
    "INJECTS",
    "MARKER",
    "STATUS_TOPIC",
    "BridgeApp",
    "BridgeCounts",
    "BridgeMapping",
    "BridgeSettings",
    "BrokerUnavailable",
    "EchoFilter",
    "ExternalCodec",
    "Incoming",
    "MappingError",
    "p2phost_apps",
]


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The bridge, configured by ``[config.broker-bridge]`` (idle without mappings)."""
    return [BridgeApp(BridgeSettings.from_config(context.config), peer_id=context.peer_id)]
