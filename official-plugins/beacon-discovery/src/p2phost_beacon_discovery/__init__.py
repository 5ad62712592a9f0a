"""Beacon discovery for p2phost: UDP multicast or broadcast beacons on a LAN, Zyre style."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import Discovery, PluginContext, hookimpl

from ._discovery import BeaconDiscovery, BeaconError, BeaconSettings
from ._format import Beacon, decode, encode, fits, scope_tag
from ._links import Link, addresses_on, multicast_links

__all__ = [
    "Beacon",
    "BeaconDiscovery",
    "BeaconError",
    "BeaconSettings",
    "Link",
    "addresses_on",
    "decode",
    "encode",
    "fits",
    "multicast_links",
    "p2phost_discovery",
    "scope_tag",
]


@hookimpl
def p2phost_discovery(context: PluginContext) -> Sequence[Discovery]:
    """Beacon discovery configured from ``[config.beacon-discovery]``."""
    settings = BeaconSettings.from_config(context.config, context.name)
    return [BeaconDiscovery(settings, name=context.name, logger=context.logger)]
