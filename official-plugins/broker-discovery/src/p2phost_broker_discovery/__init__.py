"""Broker discovery for p2phost: presence through a shared Redis or NATS."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from p2phost_sdk import Discovery, PluginContext, hookimpl

from ._discovery import BrokerDiscovery, BrokerSettings
from ._format import MAX_PRESENCE, decode, encode
from ._nats import NatsDiscovery
from ._redis import RedisDiscovery

__all__ = [
    "MAX_PRESENCE",
    "BrokerDiscovery",
    "BrokerSettings",
    "NatsDiscovery",
    "RedisDiscovery",
    "broker_discovery",
    "decode",
    "encode",
    "p2phost_discovery",
]


def broker_discovery(settings: BrokerSettings, *, name: str = "broker-discovery",
                     logger: logging.Logger | None = None) -> BrokerDiscovery:
    """The back end for ``settings.url``: Redis or NATS."""
    kind = NatsDiscovery if settings.backend == "nats" else RedisDiscovery
    return kind(settings, name=name, logger=logger)


@hookimpl
def p2phost_discovery(context: PluginContext) -> Sequence[Discovery]:
    """Broker discovery configured from ``[config.broker-discovery]``."""
    settings = BrokerSettings.from_config(context.config, context.name)
    return [broker_discovery(settings, name=context.name, logger=context.logger)]
