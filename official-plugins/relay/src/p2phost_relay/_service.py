"""One node's relay: its circuits as a client, and (with ``serve``) the relay's own side.

The relay protocol (docs/wire.md section 7) runs on the ``relay`` app topic over the
node's own connections, so the hop to the relay is authenticated and encrypted by the
node's security plugin and every request's sender is a proven peer id. Circuits are then
handshaken by the host like any connection, end to end, through the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from typing import Any

from p2phost_sdk import (
    Messenger,
    PeerUnavailable,
    PluginContext,
    RemoteError,
    TaskOwner,
)

from ._address import parse
from ._circuit import Circuit, pull_frames
from ._errors import RelayError, RelayRefused
from ._forward import Forwards
from ._hop import Closed, End, Hop
from ._reservation import Reservation, keep, reason_of
from ._serving import _CREDIT_SIZE, TOPIC, Serving, _is_id, _is_size, _run, log
from ._settings import RelaySettings, settings_of
from ._upgrade import offered, own_addresses, upgrade

_ENVELOPE_ROOM = 1024


# The host asks for transports and for apps separately; both faces of one node's relay
# share one service, keyed by the node's peer id (nodes of one process stay apart).
_services: dict[str, RelayService] = {}


def relay_of(context: PluginContext) -> RelayService:
    """The relay service of the node ``context`` belongs to (made on first use, and
    forgotten when its app stops, so a node opened again starts afresh)."""
    service = _services.get(context.peer_id)
    if service is None:
        service = _services[context.peer_id] = RelayService(
            context.peer_id, settings_of(context.name, context.config),
            context.max_frame_size)
    return service


class RelayService(Serving):
    """Everything one node's relay plugin holds; shared by its transport and its app."""

    def __init__(self, peer_id: str, settings: RelaySettings, max_frame_size: int) -> None:
        self.peer_id = peer_id
        self.settings = settings
        self.max_frame_size = max_frame_size
        # A circuit's frame crosses each hop as base64 in a message of at most the node's
        # max-frame-size, envelope and JSON included.
        self.circuit_frame = (max_frame_size - _ENVELOPE_ROOM) * 3 // 4
        self.tasks = TaskOwner("relay", logger=log)
        # A circuit's direction buffers what its far end has not taken: up to buffer-bytes
        # and one frame, then the circuit fails (a far end that does not read).
        self.forwards = Forwards(self._send_to, limit=settings.buffer_bytes + self.circuit_frame,
                                 timeout=settings.forward_timeout, tasks=self.tasks,
                                 on_fail=self._forward_failed,
                                 total=settings.buffer_total)
        self.hop = Hop(settings.limits, on_close=self.forwards.closed)
        self.counters: Counter[str] = Counter()
        self.circuits: dict[tuple[str, str], Circuit] = {}
        self.reservations: list[Reservation] = []
        self._node: Messenger | None = None
        #: Called with every frame the relay forwards (tests read what a relay sees).
        self.tap: list[Any] = []

    @property
    def node(self) -> Messenger:
        """The node, once the relay app started."""
        if self._node is None:
            raise RelayError("relayed addresses are dialled once the node runs: the circuit "
                             "rides the relay app, which starts with the node; fix: "
                             "start the node first (`p2phost run`, or open it in a "
                             "library) and dial from there")
        return self._node

    def attach(self, node: Messenger) -> None:
        """The app started: circuits can be opened through ``node``."""
        self._node = node

    async def detach(self) -> None:
        """The app stopped: end every task, and let a node opened again start afresh."""
        await self.tasks.close(5.0)
        for circuit in list(self.circuits.values()):
            circuit.end("the node stopped")
        if _services.get(self.peer_id) is self:
            del _services[self.peer_id]

    # -- this node as a client: dialling through a relay -----------------------------------

    async def dial(self, address: str, timeout: float) -> Circuit:
        """A circuit to the peer named in ``address``, through its relay."""
        where = parse(address, target=True)
        assert where.target is not None
        node = self.node
        try:
            async with asyncio.timeout(timeout):
                relay = await node.connect(where.relay)
        except TimeoutError:
            raise RelayError(f"{address}: the relay {where.relay} did not answer within "
                             f"{timeout:g}s") from None
        except PeerUnavailable as exc:
            raise RelayError(f"{address}: cannot reach the relay: {exc}") from exc
        circuit_id = secrets.token_hex(8)
        # Registered before asking: the target's first frame may come before the answer.
        circuit = self._circuit(relay, circuit_id, local=f"{where.relay}{'/p2p-circuit'}",
                                remote=str(where), peer=where.target)
        # A client node (`p2phost ping`/`send`) is sent only replies: it pulls its frames.
        pull = getattr(getattr(node, "options", None), "client", False) is True
        try:
            answer = await node.request(
                relay, TOPIC, {"op": "connect", "target": where.target, "circuit": circuit_id,
                               "addrs": own_addresses(node),
                               **({"pull": True} if pull else {"credit": True})},
                timeout=min(timeout, self.settings.request_timeout))
        except RemoteError as exc:
            circuit.end("refused")
            raise RelayRefused(f"{address}: the relay refused: {reason_of(exc)}") from exc
        except Exception as exc:  # RequestTimeout, PeerUnavailable
            circuit.end("no answer")
            raise RelayError(f"{address}: the relay did not open the circuit: {exc}") from exc
        self.counters["circuits dialled"] += 1
        buffer = answer.get("buffer") if isinstance(answer, dict) else None
        if _is_size(buffer) and not pull:  # the relay speaks flow control
            assert isinstance(buffer, int)
            circuit.flow_control(min(self.settings.buffer_bytes, buffer), grant_now=False)
        if pull:
            self.tasks.spawn(pull_frames(node, relay, circuit, self.settings.request_timeout),
                             f"relay pull {circuit_id}")
        return circuit

    def _circuit(self, relay: str, circuit_id: str, *, local: str, remote: str,
                 peer: str | None) -> Circuit:
        async def post(body: dict[str, Any]) -> None:
            await self.node.send(relay, TOPIC, body)

        async def post_credit(limit: int) -> None:
            with contextlib.suppress(Exception):  # the circuit's end tells the rest
                async with asyncio.timeout(self.settings.forward_timeout):
                    await post({"op": "credit", "circuit": circuit_id, "limit": limit})

        def grant(limit: int) -> None:
            self.tasks.spawn(post_credit(limit), f"relay credit {circuit_id}")

        circuit = Circuit(relay, circuit_id, post, local_address=local, remote_address=remote,
                          remote_peer_id=peer, max_frame_size=self.circuit_frame,
                          buffer_bytes=self.settings.buffer_bytes,
                          timeout=self.settings.forward_timeout, on_close=self._forget,
                          grant=grant, counters=self.counters)
        self.circuits[(relay, circuit_id)] = circuit
        return circuit

    async def check_reached(self, peer_id: str, address: str) -> None:
        """Close a dialled circuit on which a peer other than the one asked for answered;
        try to upgrade an accepted one whose dialler offered direct addresses."""
        for circuit in list(self.circuits.values()):
            if circuit.remote_address == address and circuit.upgrade_to and self.settings.upgrade:
                addresses, circuit.upgrade_to = circuit.upgrade_to, []
                self.tasks.spawn(self._upgrade(circuit, peer_id, addresses),
                                 f"relay upgrade {peer_id[:12]}")
            if circuit.remote_address == address and circuit.remote_peer_id is not None \
                    and circuit.remote_peer_id != peer_id and circuit.ended is None:
                self.counters["wrong peer reached"] += 1
                log.warning("the relay for %s connected us to %s instead: closed", address,
                            peer_id)
                await circuit.close()

    async def _upgrade(self, circuit: Circuit, peer_id: str, addresses: list[str]) -> None:
        if await upgrade(self.node, circuit, peer_id, addresses,
                         self.settings.request_timeout):
            self.counters["upgraded to direct"] += 1

    def _forget(self, circuit: Circuit) -> None:
        self.circuits.pop((circuit.relay_peer, circuit.circuit_id), None)

    # -- this node as a client: listening through a relay ----------------------------------

    def reserve(self, reservation: Reservation) -> None:
        """Keep ``reservation`` on its relay while it is open (a task owned here)."""
        self.reservations.append(reservation)
        reservation.task = self.tasks.spawn(keep(self, reservation),
                                            f"relay reservation {reservation.address}")

    async def unreserve(self, reservation: Reservation) -> None:
        """Stop renewing; circuits already accepted stay until they end."""
        if reservation in self.reservations:
            self.reservations.remove(reservation)
        task, reservation.task = reservation.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)

    async def on_incoming(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        """The relay brings a circuit from a dialler: hand it to the host as accepted."""
        circuit_id, dialler = body.get("circuit"), body.get("from")
        if not _is_id(circuit_id) or not isinstance(dialler, str) or len(dialler) > 128:
            raise self._malformed("incoming")
        assert isinstance(circuit_id, str)
        held = [r for r in self.reservations if r.relay_peer == sender]
        if not held:
            self.counters["refused: no reservation"] += 1
            raise RelayRefused("no reservation: this node holds no reservation with you")
        where = held[0].address
        circuit = self._circuit(sender, circuit_id, local=str(where.of(self.peer_id)),
                                remote=str(where.of(dialler)), peer=None)
        circuit.upgrade_to = offered(body.get("addrs"))
        buffer = body.get("buffer")
        if body.get("credit") is True and _is_size(buffer):  # the relay and dialler speak it
            assert isinstance(buffer, int)
            circuit.flow_control(min(self.settings.buffer_bytes, buffer), grant_now=True)
        # The host's accept handshakes at once; this handler must return first, so the
        # relay's next messages (the handshake's frames) reach the circuit.
        self.tasks.spawn(_run(held[0].accept(circuit)), f"relay accept {circuit_id}")
        self.counters["circuits accepted"] += 1
        return {"ok": True}

    # -- frames, closes and lost peers, for both roles --------------------------------------

    async def on_data(self, sender: str, body: dict[str, Any]) -> None:
        """A frame of a circuit: ours (queue it) or one we relay (forward it)."""
        circuit_id, data = body.get("circuit"), body.get("data")
        limit = 4 * ((self.circuit_frame + 2) // 3)  # its base64
        if not _is_id(circuit_id) or not isinstance(data, str) or len(data) > limit:
            self._malformed("data")
            if _is_id(circuit_id) and isinstance(data, str):  # a frame too large for us
                assert isinstance(circuit_id, str)
                self._too_large(End(sender, circuit_id), len(data) * 3 // 4)
            return
        assert isinstance(circuit_id, str)
        mine = self.circuits.get((sender, circuit_id))
        if mine is not None:
            await mine.feed(data)
            return
        end = End(sender, circuit_id)
        size = len(data) * 3 // 4
        try:
            other = self.hop.route(end, size)
        except KeyError:
            self.counters["unknown circuit"] += 1
            return
        if isinstance(other, Closed):  # a limit: the hop already forgot the circuit
            self._tell_later(end, other.reason)
            self._tell_later(other.other, other.reason)
            return
        for tap in self.tap:
            tap(data)
        # Queued for the circuit's own task: this handler never waits for the far end, so
        # the app's mailbox (shared by every peer) keeps moving for the other circuits.
        self.forwards.put(end, other, {"op": "data", "circuit": other.circuit, "data": data},
                          size)

    def _too_large(self, end: End, size: int) -> None:
        # Dropping one frame would break the circuit's stream (its security plugin sees a
        # message missing): close the circuit, saying why, rather than leave it corrupt.
        reason = (f"a frame of {size} bytes is over this relay's limit of "
                  f"{self.circuit_frame} (from its max-frame-size); fix: raise max-frame-size "
                  "in [node] of the relay's p2phost.toml")
        mine = self.circuits.get((end.peer, end.circuit))
        if mine is not None:
            mine.end(reason)
            self._tell_later(end, reason)
            return
        other = self.hop.close(end, "frame too large")  # counted as "closed: ..."
        if other is not None:
            log.info("closed a relayed circuit of %s: %s", end.peer, reason)
            self._tell_later(end, reason)
            self._tell_later(other, reason)

    async def on_credit(self, sender: str, body: dict[str, Any]) -> None:
        """A window grant of a circuit: for ours (we may send more) or one we relay (passed
        on to the other end, in order with that end's frames)."""
        circuit_id, limit = body.get("circuit"), body.get("limit")
        if not _is_id(circuit_id) or not _is_size(limit):
            self._malformed("credit")
            return
        assert isinstance(circuit_id, str) and isinstance(limit, int)
        mine = self.circuits.get((sender, circuit_id))
        if mine is not None:
            mine.credit(limit)
            return
        end = End(sender, circuit_id)
        other = self.hop.other(end)
        if other is None:
            self.counters["unknown circuit"] += 1
            return
        self.forwards.put(end, other, {"op": "credit", "circuit": other.circuit,
                                       "limit": limit}, _CREDIT_SIZE)

    def _forward_failed(self, end: End, why: str, reason: str) -> None:
        other = self.hop.close(end, why)  # counted as "closed: WHY"
        log.info("closed a relayed circuit of %s: %s", end.peer, reason)
        self._tell_later(end, reason)
        self._tell_later(other, reason)

    async def on_close(self, sender: str, body: dict[str, Any]) -> None:
        """An end (or the relay) closed a circuit."""
        circuit_id, reason = body.get("circuit"), body.get("reason", "")
        if not _is_id(circuit_id):
            self._malformed("close")
            return
        assert isinstance(circuit_id, str)
        reason = reason[:200] if isinstance(reason, str) else ""
        mine = self.circuits.get((sender, circuit_id))
        if mine is not None:
            mine.end(f"closed by the relay: {reason}" if reason else "closed by the relay")
            return
        end = End(sender, circuit_id)
        forward = self.forwards.pop(end)
        other = self.hop.close(end, "closed by an end")
        if other is None:
            return
        close = {"op": "close", "circuit": other.circuit, "reason": "closed by the other end"}
        if forward is not None:
            forward.finish(close)  # after the frames still queued for the other end
        else:
            self._tell_later(other, "closed by the other end")

    def peer_lost(self, peer: str) -> None:
        """``peer``'s connection ended: circuits through it end, reservations renew."""
        for circuit in [c for c in self.circuits.values() if c.relay_peer == peer]:
            circuit.end("the connection to the relay ended")
        for reservation in self.reservations:
            if reservation.relay_peer == peer:
                reservation.relay_peer = None
                reservation.lost.set()
        for other in self.hop.peer_gone(peer):
            self._tell_later(other, "the other end's connection to the relay ended")

    async def _send_to(self, peer: str, body: dict[str, Any]) -> None:
        await self.node.send(peer, TOPIC, body)

    def _tell_later(self, end: End | None, reason: str) -> None:
        if end is not None:
            self.tasks.spawn(self._tell(end, reason), "relay close")

    async def _tell(self, end: End | None, reason: str) -> None:
        if end is None:
            return
        if end in self.forwards.ended:  # a puller: told by its next pull
            self.forwards.ended[end] = reason
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(self.settings.forward_timeout, 2.0)):
                await self.node.send(end.peer, TOPIC, {"op": "close", "circuit": end.circuit,
                                                       "reason": reason})

    def _malformed(self, op: str) -> RelayError:
        self.counters[f"malformed {op}"] += 1
        return RelayError(f"malformed request: bad {op} message")
