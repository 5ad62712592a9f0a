"""Dialling: the peers a node keeps connected to, and ``connect``.

Dial targets come from ``[node] connect``, from discovery, from sends to an address
before its peer was known, and from the outbox while it holds messages for a peer id
(:mod:`..delivery._redial`); :class:`~._targets.DialTargets` keeps one redial loop per
target for as long as a record lists it. Discovery finds may wait for room while
``[node] peer-limit`` is reached; a peer leaving lets them in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from p2phost_sdk import (
    AddressError,
    Backoff,
    Connection,
    HandshakeError,
    PeerRecord,
    PeerUnavailable,
    TaskOwner,
    Transport,
    TransportError,
)

from .._errors import NodeConfigError, bad_address
from ._owed import OwedDials
from ._targets import DialTargets

if TYPE_CHECKING:
    from ..messaging._peers import Peer, PeerTable
    from ..wire._channel import Channel

log = logging.getLogger("p2phost.node")
#: Handshake an outgoing connection: (connection, address, inbox, expected peer id).
#: The source of the dial records the outbox keeps for the peers it holds messages for.
OUTBOX = "outbox"
OpenOutgoing = Callable[[Connection, str, bool, "str | None"], Awaitable["Channel"]]


class Dialler:
    """The dial targets of one node, the finds waiting for room, and ``connect``."""

    def __init__(self, *, local_peer_id: str, table: PeerTable, tasks: TaskOwner,
                 transport_for: Callable[[str], Transport], open_outgoing: OpenOutgoing,
                 own_addresses: Callable[[], list[str]], peer_limit: int,
                 dial_timeout: float, backoff: Backoff) -> None:
        self.local_peer_id = local_peer_id
        self._table = table
        self._transport_for = transport_for
        self._open = open_outgoing
        self.peer_limit = peer_limit
        self.dial_timeout = dial_timeout
        self._locks: dict[str, asyncio.Lock] = {}
        #: Address -> the peer id last reached there.
        self.address_peers: dict[str, str] = {}
        #: Discovery finds waiting for room under the peer limit.
        self.waiting: dict[str, PeerRecord] = {}
        # Dial targets live while a discovery record lists them (_targets.py).
        self.targets = DialTargets(connect=self._dial_one, gone=self._gone, spawn=tasks.spawn,
                                   backoff=backoff, own_addresses=own_addresses)
        #: Peers dialled for the outbox, at these addresses; their dials take turns
        #: within the limit (_owed.py).
        self._owed: dict[str, tuple[str, ...]] = {}
        #: Peers owed messages whose last dial failed (their dials wait behind).
        self._failing: set[str] = set()
        #: Peers an app disconnected: not dialled for the outbox until the timer ends.
        self._held: dict[str, asyncio.TimerHandle] = {}
        self._hold_for = backoff.maximum
        self.owed = OwedDials(room=lambda: self.peer_limit - len(self._table),
                              channels=self._channels_of, limit=peer_limit)
        self.closing = False

    def usable(self, peer_id: str) -> Channel | None:
        """The channel to send new messages to ``peer_id`` on, if connected."""
        peer = self._table.peers.get(peer_id)
        if peer is None:
            return None
        # The common case inline (one call per message sent, not three): the current
        # channel, still usable.
        current = peer.current
        if current is not None and current.usable:
            return current
        return peer.best()

    # -- discovery -------------------------------------------------------------------

    def peer_found(self, record: PeerRecord) -> None:
        """Keep a connection to a found peer (while the peer limit allows)."""
        if record.peer_id == self.local_peer_id:
            return
        if not self._room_for(record):
            self.waiting[record.peer_id or record.addresses[0]] = record
            return
        # The handshake must prove the id discovery announced (the target expects it).
        self.targets.update(record)

    def peer_lost(self, record: PeerRecord) -> None:
        """Stop redialling a lost peer (an open connection stays)."""
        self.waiting.pop(record.peer_id or record.addresses[0], None)
        self.targets.lost(record)

    def _room_for(self, record: PeerRecord) -> bool:
        if record.peer_id in self._table.peers:
            return True
        busy = set(self._table.peers) | self.targets.busy()
        return len(busy) < self.peer_limit

    def dial_waiting(self) -> None:
        """A peer left: dial peers that discovery found, or the outbox owes messages,
        while the node was full."""
        self.owed.wake()
        while self.waiting and not self.closing:
            key = next(iter(self.waiting))
            record = self.waiting.pop(key)
            if not self._room_for(record):
                self.waiting[key] = record
                return
            self.peer_found(record)

    # -- targets ---------------------------------------------------------------------

    def keep_connected(self, address: str) -> None:
        """Stay connected to ``address`` ([node] connect, static peers, the outbox)."""
        if not self.closing:
            self.targets.update(PeerRecord((address,), source="connect"))

    def keep_peer(self, peer_id: str, addresses: Sequence[str]) -> None:
        """Keep dialling ``peer_id`` at ``addresses`` while the outbox holds messages for
        it (a record of its own: discovery's records of the peer are merged, not lost)."""
        if not self.closing and addresses:
            self._owed[peer_id] = tuple(addresses)
            if peer_id not in self._held:  # (else once the hold ends)
                self.targets.update(PeerRecord(tuple(addresses), peer_id, source=OUTBOX))

    def release_peer(self, peer_id: str) -> None:
        """Nothing waits for ``peer_id`` in the outbox: its record goes (the target with
        it unless discovery lists the peer; an open connection stays, unless peers
        owed messages wait for its room: _owed.py)."""
        self._owed.pop(peer_id, None)
        self._failing.discard(peer_id)
        self.targets.lost(PeerRecord((), peer_id, source=OUTBOX))
        self.owed.wake()  # (its connection may be idle now)

    def hold(self, peer_id: str) -> None:
        """An app disconnects ``peer_id``: the outbox does not dial it again for what
        waits for it until the reconnect backoff's maximum has passed (a disconnect
        undone at once would be none; the messages wait, they are not dropped).
        Discovery and ``[node] connect`` dial it as before."""
        if self.closing:
            return
        if (timer := self._held.pop(peer_id, None)) is not None:
            timer.cancel()
        self._held[peer_id] = asyncio.get_running_loop().call_later(
            self._hold_for, self._unhold, peer_id)
        self.targets.lost(PeerRecord((), peer_id, source=OUTBOX))

    def _unhold(self, peer_id: str) -> None:
        del self._held[peer_id]
        addresses = self._owed.get(peer_id)
        if addresses and not self.closing:
            self.targets.update(PeerRecord(addresses, peer_id, source=OUTBOX))

    def stop(self) -> None:
        """The node is stopping: no new dials, redial loops cancelled."""
        self.closing = True
        self.owed.stop()
        for timer in self._held.values():
            timer.cancel()
        self._held.clear()
        self.targets.close()

    async def _dial_one(self, address: str, expected_peer_id: str | None) -> str:
        try:
            if expected_peer_id is None or expected_peer_id not in self._owed:
                return await self.connect(address, expected_peer_id=expected_peer_id)
            # (no dial storm, and within the peer limit)
            async with self.owed.slot(failed=expected_peer_id in self._failing):
                try:
                    peer_id, opened = await self._connect(address, expected_peer_id)
                except Exception:
                    if expected_peer_id in self._owed:
                        self._failing.add(expected_peer_id)
                    raise
                self._failing.discard(expected_peer_id)
                if opened is not None:
                    self.owed.opened(opened)
                return peer_id
        except NodeConfigError as exc:
            raise PeerUnavailable(str(exc)) from exc

    def _gone(self, peer_id: str) -> Peer | None:
        return self._table.get(peer_id)

    def _channels_of(self, peer_id: str) -> list[Channel]:
        peer = self._table.get(peer_id)
        return [] if peer is None else peer.channels

    def keeps(self, peer_id: str) -> bool:
        """Whether a dial target other than the outbox's keeps ``peer_id`` connected
        (discovery's, ``[node] connect``'s: those are kept by address, so the peer last
        reached at the address counts)."""
        return self.targets.keeps(peer_id, self.address_peers.get, ignore=OUTBOX)

    async def connect(self, address: str, *, expected_peer_id: str | None = None) -> str:
        """Dial ``address`` (or reuse the connection to it); returns the peer id. The
        connection is the caller's: the outbox does not close it to make room."""
        peer_id, _ = await self._connect(address, expected_peer_id)
        self.owed.claim(peer_id)
        return peer_id

    async def _connect(self, address: str, expected_peer_id: str | None
                       ) -> tuple[str, Channel | None]:
        # The peer id, and the channel when this call opened a new one.
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            known = self.address_peers.get(address)
            if known is not None and self.usable(known) is not None:
                return known, None
            if self.closing:
                raise PeerUnavailable("the node is shutting down")
            transport = self._transport_for(address)
            try:
                connection = await transport.dial(address, timeout=self.dial_timeout)
            except AddressError as exc:  # no retry mends it: a usage error, as no transport is
                raise bad_address(exc) from exc
            except TransportError as exc:
                raise PeerUnavailable(str(exc)) from exc
            try:
                channel = await self._open(connection, address, transport.inbox_based,
                                           expected_peer_id)
            except HandshakeError as exc:
                raise PeerUnavailable(f"{address}: handshake failed: {exc}") from exc
            self.address_peers[address] = channel.peer_id
            return channel.peer_id, channel


class Link(Dialler):
    """The dialler, as acknowledged delivery's link to the node."""

    def reply_channel(self, peer_id: str) -> Channel | None:
        peer = self._table.get(peer_id)
        return peer.any_open() if peer is not None else None

    def peer_at(self, address: str) -> str | None:
        return self.address_peers.get(address)

    def check_address(self, address: str) -> None:
        try:
            self._transport_for(address).check_address(address)
        except AddressError as exc:
            raise bad_address(exc) from exc
