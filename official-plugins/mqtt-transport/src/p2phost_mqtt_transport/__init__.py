"""MQTT transport for p2phost: ``mqtt://HOST:PORT``, a QoS 1 topic per node inbox."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Transport, hookimpl

from ._medium import MqttMedium, MqttTransport
from ._stores import inbox_topic

__all__ = ["MqttMedium", "MqttTransport", "inbox_topic", "p2phost_transports"]


@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """The MQTT transport, configured from ``[config.mqtt-transport]``."""
    return [MqttTransport.from_context(
        context, broker_limit=int(context.config.get("broker-queue-limit", 1000)))]
