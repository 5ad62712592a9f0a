"""Who may start a handshake with this node (the log of failed ones that a flood cannot
fill is the SDK's :class:`~p2phost_sdk.RateLimitedLog`).

Unauthenticated connections are cheap to open and costly to serve, so the node bounds
them on their own, apart from ``[node] peer-limit`` (which counts only peers and clients
past their hello: a flood of connections that send nothing must not keep peers out):

- at most ``per_source`` handshakes from one source: an IPv4 host, or an IPv6 /64 (one
  host commonly holds a whole /64, so its addresses are one source);
- at most four times that from one network: an IPv4 /24, an IPv6 /48;
- at most ``total`` in all.

A connection over its source's bound is refused. When its network's bound or the total
is full, a connection from a source with fewer handshakes there than another source
takes the place of the oldest handshake of the source holding most (that one gets the
refusal), as a SYN-flood defence does: a peer whose hellos take milliseconds still gets
in while an attacker holds sockets open without a word; otherwise it is refused. Each
admitted handshake reads frames no larger than the security plugin's largest handshake
message (see ``handshake``).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable

from ..wire._refusal import BUSY

#: A network (IPv4 /24, IPv6 /48) holds at most this many times a source's handshakes.
NETWORK_SOURCES = 4


def host_of(address: str) -> str:
    """The host part of a remote address (``tcp://1.2.3.4:5`` -> ``1.2.3.4``)."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def source_of(address: str) -> tuple[str, str]:
    """The source and the network a handshake from ``address`` counts under: an IPv4
    host and its /24, an IPv6 /64 and its /48 (an IPv4-mapped IPv6 address is IPv4);
    any other host (a name, a medium's address) is both."""
    host = host_of(address)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # (an IPv6 zone names no host)
    except ValueError:
        return host, host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip), str(ipaddress.ip_network(f"{ip}/24", strict=False))
    return (str(ipaddress.ip_network(f"{ip}/64", strict=False)),
            str(ipaddress.ip_network(f"{ip}/48", strict=False)))


class Pending:
    """A handshake in progress, admitted by :meth:`HandshakeGate.enter`."""

    __slots__ = ("address", "evicted", "joining", "network", "order", "source")

    def __init__(self, address: str, order: int) -> None:
        self.address = address
        #: When it was admitted, in the gate's order (smaller: older).
        self.order = order
        self.source, self.network = source_of(address)
        #: Why it lost its place to a newer connection (None: it has its place).
        self.evicted: str | None = None
        #: Its peer passed the peer limit once its hello named it (Connections' count).
        self.joining = False


class HandshakeGate:
    """Counts handshakes in progress, in all, per network and per source, and picks the
    one a newer connection takes the place of when a bound is full."""

    def __init__(self, *, total: int, per_source: int,
                 evict: Callable[[Pending], None]) -> None:
        self.total = total
        self.per_source = per_source
        self.per_network = NETWORK_SOURCES * per_source
        # Each source's handshakes, oldest first.
        self._sources: dict[str, dict[Pending, None]] = {}
        self._networks: dict[str, int] = {}
        self._pending = 0
        self._order = itertools.count()
        self._evict = evict
        #: Connections refused because too many handshakes were in progress.
        self.refused = 0
        #: Handshakes that lost their place to a newer connection.
        self.evicted = 0

    def __len__(self) -> int:
        return self._pending

    def enter(self, address: str) -> Pending | str:
        """Admit a handshake from ``address`` (evicting another when a bound is full and
        another source holds more of it): its :class:`Pending`, or why not."""
        entry = Pending(address, next(self._order))
        own = len(self._sources.get(entry.source, ()))
        if own >= self.per_source:
            return self._refuse(f"{BUSY} from {entry.source} ({self.per_source})")
        # The full bound, and within which network a place is taken (None: in all).
        bound: str | None = None
        within: str | None = None
        if entry.network != entry.source \
                and self._networks.get(entry.network, 0) >= self.per_network:
            bound, within = f"{BUSY} from {entry.network} ({self.per_network})", entry.network
        elif self._pending >= self.total:
            bound = f"{BUSY} ({self.total})"
        if bound is not None:
            victim = self._crowding(own, within)
            if victim is None:
                return self._refuse(bound)
            victim.evicted = bound
            self.leave(victim)
            self.evicted += 1
            self._evict(victim)
        self._sources.setdefault(entry.source, {})[entry] = None
        self._networks[entry.network] = self._networks.get(entry.network, 0) + 1
        self._pending += 1
        return entry

    def _refuse(self, reason: str) -> str:
        self.refused += 1
        return reason

    def _crowding(self, own: int, network: str | None) -> Pending | None:
        """The oldest handshake of the source holding most (in ``network``, or in all),
        when it holds more than ``own``; ties go to the source with the oldest."""
        best: Pending | None = None
        most = own
        for held in self._sources.values():
            oldest = next(iter(held))
            if network is not None and oldest.network != network:
                continue
            if len(held) > most or (best is not None and len(held) == most
                                    and oldest.order < best.order):
                best, most = oldest, len(held)
        return best

    def leave(self, entry: Pending) -> None:
        """A handshake admitted by ``enter`` finished, either way (nothing if it was
        evicted: it left then)."""
        held = self._sources.get(entry.source)
        if held is None or entry not in held:
            return
        del held[entry]
        if not held:
            del self._sources[entry.source]
        self._networks[entry.network] -= 1
        if not self._networks[entry.network]:
            del self._networks[entry.network]
        self._pending -= 1
