"""Who may start a handshake with this node (the log of failed ones that a flood cannot
fill is the SDK's :class:`~p2phost_sdk.RateLimitedLog`).

Unauthenticated connections are cheap to open and costly to serve, so the node bounds
them by construction: at most ``total`` handshakes in progress, at most ``per_source``
from one source host (one host cannot crowd out the rest), each of them reading frames
no larger than the security plugin's largest handshake message (see ``handshake``).
"""

from __future__ import annotations

from collections import Counter

from ..wire._refusal import BUSY


def source_of(address: str) -> str:
    """The host part of a remote address (``tcp://1.2.3.4:5`` -> ``1.2.3.4``)."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


class HandshakeGate:
    """Counts handshakes in progress, in all and per source host."""

    def __init__(self, *, total: int, per_source: int) -> None:
        self.total = total
        self.per_source = per_source
        self._sources: Counter[str] = Counter()
        self._pending = 0
        #: Connections refused because too many handshakes were in progress.
        self.refused = 0

    def __len__(self) -> int:
        return self._pending

    def enter(self, address: str) -> str | None:
        """Admit a handshake from ``address``: None, or why not."""
        source = source_of(address)
        if self._pending >= self.total:
            self.refused += 1
            return f"{BUSY} ({self.total})"
        if self._sources[source] >= self.per_source:
            self.refused += 1
            return f"{BUSY} from {source} ({self.per_source})"
        self._pending += 1
        self._sources[source] += 1
        return None

    def leave(self, address: str) -> None:
        """A handshake admitted by ``enter`` finished (either way)."""
        source = source_of(address)
        self._pending -= 1
        self._sources[source] -= 1
        if self._sources[source] <= 0:
            del self._sources[source]

