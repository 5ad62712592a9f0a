"""mDNS discovery for p2phost: DNS-SD services of type ``_p2phost._tcp.local.``."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import Discovery, PluginContext, hookimpl

from ._discovery import MdnsDiscovery, MdnsError, MdnsSettings, interface_addresses
from ._records import MAX_TXT, SERVICE_TYPE, instance_name, parse_service, txt_properties

__all__ = [
    "MAX_TXT",
    "SERVICE_TYPE",
    "MdnsDiscovery",
    "MdnsError",
    "MdnsSettings",
    "instance_name",
    "interface_addresses",
    "p2phost_discovery",
    "parse_service",
    "txt_properties",
]


@hookimpl
def p2phost_discovery(context: PluginContext) -> Sequence[Discovery]:
    """mDNS discovery configured from ``[config.mdns-discovery]``."""
    settings = MdnsSettings.from_config(context.config, context.name)
    return [MdnsDiscovery(settings, name=context.name, logger=context.logger)]
