"""Circuit relay for p2phost: reach a node that cannot be dialled, through a relay.

A node with a public address relays (``serve = true``); a node behind NAT listens on
``relay+tcp://RELAY:PORT`` (a reservation there) and is reached at
``relay+tcp://RELAY:PORT/p2p-circuit/PEERID``. The two ends run their security plugin
through the relay, which forwards only ciphertext, within limits on reservations,
circuits, bytes and time.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import App, PluginContext, Transport, hookimpl

from ._address import SCHEMES, RelayAddress, parse
from ._circuit import Circuit
from ._errors import RelayAddressError, RelayError, RelayRefused
from ._hop import Hop, HopLimits
from ._plugin import RelayApp, RelayListener, RelayTransport
from ._service import RelayService, relay_of
from ._serving import TOPIC
from ._settings import RelaySettings, settings_of

__all__ = [
    "SCHEMES",
    "TOPIC",
    "Circuit",
    "Hop",
    "HopLimits",
    "RelayAddress",
    "RelayAddressError",
    "RelayApp",
    "RelayError",
    "RelayListener",
    "RelayRefused",
    "RelayService",
    "RelaySettings",
    "RelayTransport",
    "p2phost_apps",
    "p2phost_transports",
    "parse",
    "relay_of",
    "settings_of",
]

@hookimpl
def p2phost_transports(context: PluginContext) -> Sequence[Transport]:
    """Dialling and listening through relays (``relay+tcp://...`` and the like)."""
    return [RelayTransport(relay_of(context))]


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The relay protocol's app: circuits' frames, and relaying when ``serve``."""
    return [RelayApp(relay_of(context))]
