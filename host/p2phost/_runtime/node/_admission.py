"""Who may start a handshake with this node (the log of failed ones that a flood cannot
fill is the SDK's :class:`~p2phost_sdk.RateLimitedLog`).

Unauthenticated connections are cheap to open and costly to serve, so the node bounds
them on their own, apart from ``[node] peer-limit`` (which counts only peers and clients
past their hello: a flood of connections that send nothing must not keep peers out).
Each handshake counts under a source, and the source under a network:

- over IP, an IPv4 host in its /24, or an IPv6 /64 (one host commonly holds a whole /64)
  in its /48;
- on a broker medium (an inbox transport: MQTT, NATS, Redis, PostgreSQL, ...), the
  dialler's inbox as the transport reports it (``URL#PEER``) in the medium (``URL``):
  every peer on a broker connects from the broker's host, which would make them one
  source.

Two rules:

- at most ``per_source`` handshakes from one source: one more is refused;
- at most ``total`` in all. When that is full, a newcomer takes the place of the oldest
  handshake of the most crowded source of the most crowded network (which gets the
  refusal), if that network holds more handshakes than the newcomer's, or as many and
  that source more than the newcomer's; else the newcomer is refused.

Networks count only under pressure, so peers on one LAN or broker redialling at once fit
within the total. Under a flood, as in a SYN-flood defence, a peer whose hellos take
milliseconds gets in while an attacker holds sockets open without a word, and a
handshake alone in its network loses its place only when every network holds one: an
attacker needs ``total`` networks (IPv6 /48s, IPv4 /24s) at once to push it out. Each
admitted handshake reads frames no larger than the security plugin's largest handshake
message (see ``handshake``).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable

from ..wire._refusal import BUSY


def host_of(address: str) -> str:
    """The host part of a remote address (``tcp://1.2.3.4:5`` -> ``1.2.3.4``)."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def source_of(address: str, *, inbox: bool = False) -> tuple[str, str]:
    """The source and the network a handshake from ``address`` counts under: an IPv4
    host and its /24, an IPv6 /64 and its /48 (an IPv4-mapped IPv6 address is IPv4);
    on a broker medium (``inbox``), the dialler's inbox (``URL#PEER``) and the medium's
    ``URL``; any other host (a name) is both."""
    if inbox:
        return address, address.split("#", 1)[0]
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

    def __init__(self, address: str, order: int, *, inbox: bool = False) -> None:
        self.address = address
        #: When it was admitted, in the gate's order (smaller: older).
        self.order = order
        self.source, self.network = source_of(address, inbox=inbox)
        #: Why it lost its place to a newer connection (None: it has its place).
        self.evicted: str | None = None
        #: Its peer passed the peer limit once its hello named it (Connections' count).
        self.joining = False


class HandshakeGate:
    """Counts handshakes in progress, in all, per network and per source, and picks the
    one a newer connection takes the place of when the total is full."""

    def __init__(self, *, total: int, per_source: int,
                 evict: Callable[[Pending], None]) -> None:
        self.total = total
        self.per_source = per_source
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

    def enter(self, address: str, *, inbox: bool = False) -> Pending | str:
        """Admit a handshake from ``address`` (``inbox``: reached through a broker
        medium), evicting a more crowded one when the total is full: its
        :class:`Pending`, or why not."""
        entry = Pending(address, next(self._order), inbox=inbox)
        own = len(self._sources.get(entry.source, ()))
        if own >= self.per_source:
            return self._refuse(f"{BUSY} from {entry.source} ({self.per_source})")
        if self._pending >= self.total:
            full = f"{BUSY} ({self.total})"
            victim = self._crowding((self._networks.get(entry.network, 0), own))
            if victim is None:
                return self._refuse(full)
            victim.evicted = full
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

    def _crowding(self, newcomer: tuple[int, int]) -> Pending | None:
        """The oldest handshake of the most crowded source of the most crowded network,
        when (its network's handshakes, its source's) exceed the ``newcomer``'s; ties go
        to the oldest handshake. (Comparing the network counts first: a newcomer from
        another network never takes the place of one from a less crowded network.)"""
        best: Pending | None = None
        most = newcomer
        for held in self._sources.values():
            oldest = next(iter(held))
            crowd = (self._networks[oldest.network], len(held))
            if crowd > most or (best is not None and crowd == most
                                and oldest.order < best.order):
                best, most = oldest, crowd
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
