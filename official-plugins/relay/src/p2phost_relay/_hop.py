"""The relay's side: reservations and circuits, with every limit and a counter per refusal.

Pure bookkeeping, no I/O: the app asks :class:`Hop` whether a reservation or circuit may
be opened and which end a frame goes to; it does the sending. A circuit is known under
both its ends' names, ``(peer id, circuit id)``, each end having chosen its own id.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import RelayRefused


@dataclass(frozen=True)
class HopLimits:
    """How much a relay gives (``[config.relay]``)."""

    reservations: int = 128
    reservation_ttl: float = 3600.0
    circuits: int = 256
    circuits_per_peer: int = 16
    circuit_bytes: int = 64 * 1024 * 1024
    circuit_seconds: float = 3600.0


@dataclass(frozen=True)
class End:
    """One end of a circuit as the relay names it."""

    peer: str
    circuit: str


@dataclass(frozen=True)
class Closed:
    """A circuit the relay closed for a limit: the other end, and why."""

    other: End
    reason: str


@dataclass
class HopCircuit:
    """A circuit the relay forwards: its dialler, its target, what it has carried."""

    dialler: End
    target: End
    opened: float
    carried: int = 0

    def other(self, end: End) -> End:
        """The end ``end`` is not."""
        return self.target if end == self.dialler else self.dialler


@dataclass
class Hop:
    """Reservations and circuits of one relay."""

    limits: HopLimits = field(default_factory=HopLimits)
    clock: Callable[[], float] = time.monotonic
    #: Counters: ``reserved``, ``circuits opened``, ``bytes relayed``, ``refused: REASON``,
    #: ``closed: REASON``.
    counters: Counter[str] = field(default_factory=Counter)
    #: Called with each circuit as it is forgotten (the app stops its forwarding).
    on_close: Callable[[HopCircuit], None] | None = None
    _reservations: dict[str, float] = field(default_factory=dict)
    _circuits: dict[End, HopCircuit] = field(default_factory=dict)
    _per_peer: Counter[str] = field(default_factory=Counter)

    # -- reservations --------------------------------------------------------------------

    def reserve(self, peer: str) -> float:
        """Reserve (or renew) a slot for ``peer``; its lifetime in seconds."""
        self._expire_reservations()
        if peer not in self._reservations and \
                len(self._reservations) >= self.limits.reservations:
            raise self._refuse("reservation limit", f"this relay holds its limit of "
                               f"{self.limits.reservations} reservations")
        self._reservations[peer] = self.clock() + self.limits.reservation_ttl
        self.counters["reserved"] += 1
        return self.limits.reservation_ttl

    def reserved(self, peer: str) -> bool:
        """Whether ``peer`` holds a live reservation."""
        expiry = self._reservations.get(peer)
        return expiry is not None and expiry > self.clock()

    def active_reservations(self) -> int:
        """Reservations held now."""
        self._expire_reservations()
        return len(self._reservations)

    def _expire_reservations(self) -> None:
        now = self.clock()
        for peer in [p for p, expiry in self._reservations.items() if expiry <= now]:
            del self._reservations[peer]

    # -- circuits ------------------------------------------------------------------------

    def open(self, dialler: End, target_peer: str) -> HopCircuit:
        """A new circuit from ``dialler`` to ``target_peer``; RelayRefused saying why not."""
        if not self.reserved(target_peer):
            raise self._refuse("no reservation", f"{target_peer} holds no reservation on "
                               "this relay")
        if dialler.peer == target_peer:
            raise self._refuse("malformed", "a circuit to oneself")
        if dialler in self._circuits:
            raise self._refuse("malformed", f"circuit id {dialler.circuit} is in use")
        if len(self._circuits) // 2 >= self.limits.circuits:
            raise self._refuse("circuit limit", f"this relay forwards its limit of "
                               f"{self.limits.circuits} circuits")
        for peer in (dialler.peer, target_peer):
            if self._per_peer[peer] >= self.limits.circuits_per_peer:
                raise self._refuse("peer circuit limit", f"{peer} has its limit of "
                                   f"{self.limits.circuits_per_peer} circuits open here")
        circuit = HopCircuit(dialler, End(target_peer, secrets.token_hex(8)), self.clock())
        self._circuits[circuit.dialler] = self._circuits[circuit.target] = circuit
        self._per_peer[dialler.peer] += 1
        self._per_peer[target_peer] += 1
        self.counters["circuits opened"] += 1
        return circuit

    def route(self, end: End, size: int) -> End | Closed:
        """Where a frame of ``size`` bytes from ``end`` goes, or the circuit closed for
        passing its bytes or time (both ends to tell); KeyError for an unknown circuit."""
        circuit = self._circuits[end]
        if circuit.carried + size > self.limits.circuit_bytes:
            self.close(end, "byte limit")
            return Closed(circuit.other(end), f"byte limit: the circuit carried its limit "
                          f"of {self.limits.circuit_bytes} bytes")
        if self.clock() - circuit.opened > self.limits.circuit_seconds:
            self.close(end, "time limit")
            return Closed(circuit.other(end), f"time limit: the circuit was open for its "
                          f"limit of {self.limits.circuit_seconds:g}s")
        circuit.carried += size
        self.counters["bytes relayed"] += size
        return circuit.other(end)

    def other(self, end: End) -> End | None:
        """The other end of ``end``'s circuit; None if the circuit is not (or no longer)
        known."""
        circuit = self._circuits.get(end)
        return None if circuit is None else circuit.other(end)

    def close(self, end: End, reason: str) -> End | None:
        """Forget the circuit of ``end``; the other end (to tell), None if unknown."""
        circuit = self._circuits.pop(end, None)
        if circuit is None:
            return None
        other = circuit.other(end)
        self._circuits.pop(other, None)
        for peer in (end.peer, other.peer):
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
        self.counters[f"closed: {reason}"] += 1
        if self.on_close is not None:
            self.on_close(circuit)
        return other

    def peer_gone(self, peer: str) -> list[End]:
        """``peer``'s connection ended: its reservation and circuits go; the other ends."""
        self._reservations.pop(peer, None)
        ends = [end for end in self._circuits if end.peer == peer]
        return [other for end in ends if (other := self.close(end, "peer gone")) is not None]

    def overdue(self) -> list[tuple[End, End]]:
        """Close circuits past their time; both ends of each, to tell."""
        now = self.clock()
        late = {id(c): c for c in self._circuits.values()
                if now - c.opened > self.limits.circuit_seconds}
        for circuit in late.values():
            self.close(circuit.dialler, "time limit")
        return [(c.dialler, c.target) for c in late.values()]

    def active_circuits(self) -> int:
        """Circuits forwarded now."""
        return len(self._circuits) // 2

    def _refuse(self, reason: str, detail: str) -> RelayRefused:
        self.counters[f"refused: {reason}"] += 1
        return RelayRefused(f"{reason}: {detail}")
