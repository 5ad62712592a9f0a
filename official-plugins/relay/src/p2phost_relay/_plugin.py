"""The relay plugin's two faces: a transport for ``relay+...`` addresses, and the app on
the ``relay`` topic. Both belong to one :class:`~._service.RelayService` per node.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

from p2phost_sdk import (
    AcceptHandler,
    App,
    Connection,
    Listener,
    Message,
    MessageKind,
    Messenger,
    PeerInfo,
    Transport,
    handler,
)

from ._address import SCHEMES, parse
from ._reservation import Reservation
from ._service import RelayService
from ._serving import TOPIC, log

#: Seconds between the relay's sweeps of circuits past their time.
SWEEP = 5.0


class RelayListener(Listener):
    """A reservation on a relay, as a listen address: ``relay+...://RELAY/p2p-circuit/ME``."""

    def __init__(self, service: RelayService, reservation: Reservation) -> None:
        self._service = service
        self._reservation = reservation
        self.addresses = [str(reservation.address.of(service.peer_id))]
        # Circuits reach this address once the relay granted the reservation.
        self.serving = reservation.granted

    @property
    def relay_peer(self) -> str | None:
        """The relay's peer id while the reservation holds."""
        return self._reservation.relay_peer

    async def close(self) -> None:
        """Stop renewing the reservation (circuits already accepted stay)."""
        await self._service.unreserve(self._reservation)


class RelayTransport(Transport):
    """Dials a peer through its relay; listens by keeping a reservation on a relay."""

    schemes: ClassVar[tuple[str, ...]] = SCHEMES

    def __init__(self, service: RelayService) -> None:
        self.service = service

    def check_address(self, address: str) -> None:
        """AddressError unless ``address`` is a relay address (a peer after the circuit
        is optional: a node listens on the relay's address alone)."""
        parse(address, target=False)

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Reserve a slot on the relay in ``address`` (renewed in the background)."""
        where = parse(address, target=False)
        reservation = Reservation(where, accept)
        self.service.reserve(reservation)
        return RelayListener(self.service, reservation)

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """A circuit to the peer in ``address`` through its relay."""
        return await self.service.dial(address, timeout)


class RelayApp(App):
    """Answers the relay protocol: reservations and circuits (``serve``), and the frames
    of this node's own circuits."""

    name = "relay"
    #: Client nodes (`p2phost ping`/`send`) dial relayed addresses too.
    client = True
    #: Frames wait here while circuit ends read; a relay serves many peers.
    mailbox_size = 4096

    def __init__(self, service: RelayService) -> None:
        self.service = service
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, node: Messenger) -> None:
        """Attach the node; a serving relay sweeps circuits past their time."""
        self.node = node
        self.service.attach(node)
        if self.service.settings.serve:
            self._sweeper = self.service.tasks.spawn(self._sweep(), "relay sweep")
            log.info("relaying for others: at most %d reservations, %d circuits",
                     self.service.settings.limits.reservations,
                     self.service.settings.limits.circuits)

    async def stop(self) -> None:
        """End every task (reservations, accepts, closes) and every circuit."""
        await self.service.detach()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP, self.service.settings.limits.circuit_seconds))
            self.service.sweep()

    @handler(TOPIC)
    async def relay(self, message: Message) -> Any:
        """One relay-protocol message (docs/wire.md section 7)."""
        body, sender, service = message.body, message.sender, self.service
        op = body.get("op") if isinstance(body, dict) else None
        request = message.kind is MessageKind.REQUEST
        if op == "data" and not request:
            await service.on_data(sender, body)
        elif op == "close" and not request:
            await service.on_close(sender, body)
        elif op == "credit" and not request:
            await service.on_credit(sender, body)
        elif op == "pull" and request:
            return service.on_pull(sender, body)
        elif op == "reserve" and request:
            return service.on_reserve(sender)
        elif op == "connect" and request:
            return await service.on_connect(sender, body)
        elif op == "incoming" and request:
            return await service.on_incoming(sender, body)
        else:
            error = service._malformed(str(op)[:20] if op is not None else "message")
            if request:
                raise error
        return None

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        """A circuit dialled for one peer id must reach that peer: a relay that handed us
        another (who proved its own id) loses the circuit."""
        await self.service.check_reached(peer.peer_id, peer.address)

    async def on_peer_lost(self, peer: PeerInfo, reason: str) -> None:
        """Circuits through a lost relay end; a lost peer's reservation and circuits go."""
        with contextlib.suppress(Exception):
            self.service.peer_lost(peer.peer_id)

    def counters(self) -> dict[str, int]:
        """What this node did as a client and as a relay (refusals by reason)."""
        hop = self.service.hop
        return {**self.service.counters, **hop.counters,
                "reservations": hop.active_reservations(),
                "circuits": hop.active_circuits(),
                "bytes queued": self.service.forwards.queued(),
                "own circuits": len(self.service.circuits)}
