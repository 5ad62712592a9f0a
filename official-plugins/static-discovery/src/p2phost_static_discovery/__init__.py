"""Static discovery for p2phost: the peers listed in ``[config.static-discovery]``."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import (
    ConfigError,
    Discovery,
    DiscoveryEvents,
    PeerRecord,
    PluginContext,
    hookimpl,
)

__all__ = ["StaticDiscovery", "p2phost_discovery"]


class StaticDiscovery(Discovery):
    """Reports a fixed list of addresses once at start; the node keeps them connected."""

    def __init__(self, peers: Sequence[str], source: str = "static-discovery") -> None:
        for address in peers:
            if "://" not in address:
                raise ConfigError(source, "peers", "addresses such as tcp://127.0.0.1:7400",
                                  address)
        self.peers = tuple(peers)
        self.source = source
        self._events: DiscoveryEvents | None = None

    async def start(self, events: DiscoveryEvents) -> None:
        """Report every listed peer (the node dials them and redials with backoff)."""
        self._events = events
        for address in self.peers:
            events.peer_found(PeerRecord((address,), source=self.source))

    def counters(self) -> dict[str, int]:
        """The listed peers reported (``p2phost peers`` shows the dial counters beside)."""
        return {"peers": len(self.peers) if self._events is not None else 0}

    async def stop(self) -> None:
        """Nothing runs in the background; forget the node."""
        self._events = None


@hookimpl
def p2phost_discovery(context: PluginContext) -> Sequence[Discovery]:
    """Static discovery over ``[config.static-discovery] peers``."""
    return [StaticDiscovery(list(context.config.get("peers", [])), source=context.name)]
