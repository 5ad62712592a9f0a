"""Redialling the peers the outbox holds messages for.

A message sent to a peer id waits in the outbox until that peer acknowledges it; the
peer must be connected for that. A peer reached once (``connect()`` then ``send(peer,
...)``) is no dial target of its own: when the connection is lost, or this node
restarts, nothing would dial it again and its messages would wait for ever. So while
the outbox holds messages for a peer id, the node keeps the peer as a dial target
(the dialler's redial loop and backoff, record source ``outbox``) at the addresses it
knows the peer by: the address it dialled the peer at and the listen addresses of the
peer's hello. Those are kept in the delivery database with the outbox (``peer_address``)
before the first message for the peer is put in, so a node restarted with messages for
a peer id dials it too. Once nothing waits for the peer, the target goes (an open
connection stays, unless the outbox's own dial opened it and peers owed messages wait
for its room: :mod:`..node._owed`), and the row goes when the peer is gone too: the
state is bounded by the peers that are connected or owed messages.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from ..wire._channel import Channel
from ._committer import Committer
from ._outjournal import Waiting
from ._store import Op

log = logging.getLogger("p2phost.delivery")
#: Peers whose addresses are remembered from their connections (the least recent
#: forgotten): only those with messages waiting need them.
_KNOWN = 4096
#: Addresses kept per peer at most (a hello lists 16 at most; one more it was dialled at).
_ADDRESSES = 17


class Dialling(Protocol):
    """What redialling needs from the node (its dialler provides it)."""

    def keep_peer(self, peer_id: str, addresses: Sequence[str]) -> None:
        """Keep dialling ``peer_id`` at ``addresses`` (with the dialler's backoff)."""

    def release_peer(self, peer_id: str) -> None:
        """Stop dialling ``peer_id`` for the outbox (an open connection stays, unless
        it is idle and the outbox's dial opened it while others wait for room)."""

    def usable(self, peer_id: str) -> Channel | None:
        """The open channel to ``peer_id`` messages may go on, if any."""


def addresses_of(channel: Channel) -> tuple[str, ...]:
    """Where ``channel``'s peer can be dialled: the address this node dialled it at
    (where a peer that dialled in came from is no listener), and its hello's listen
    addresses."""
    found = [channel.address] if channel.initiator else []
    found.extend(a for a in channel.hello.listen if isinstance(a, str))
    return tuple(dict.fromkeys(found))[:_ADDRESSES]


class Redial:
    """The peers the outbox holds messages for, kept as dial targets."""

    def __init__(self, link: Dialling, committer: Committer, waiting: Waiting) -> None:
        self._link = link
        self._committer = committer
        self._waiting = waiting
        #: Peer -> the addresses it was last connected at (bounded, least recent dropped).
        self._known: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: Peer -> the addresses its ``peer_address`` row holds.
        self._saved: dict[str, tuple[str, ...]] = {}
        #: Peers kept as dial targets for the outbox.
        self.kept: set[str] = set()
        #: Peer -> messages on their way into the outbox (not in its rows yet): the
        #: peer is owed them, whatever the rows say meanwhile.
        self._putting: dict[str, int] = {}

    def start(self, db: sqlite3.Connection, destinations: Sequence[str]) -> None:
        """At start: dial every peer id the outbox holds messages for, at its saved
        addresses; rows of peers owed nothing are deleted."""
        waiting = set(destinations)
        stale = []
        for peer, text in db.execute("SELECT peer, addresses FROM peer_address"):
            if peer not in waiting:
                stale.append(peer)
                continue
            try:
                listed = json.loads(text)
            except ValueError:  # a damaged row: the peer waits to connect, as before
                continue
            addresses = tuple(a for a in listed if isinstance(a, str)) \
                if isinstance(listed, list) else ()
            self._saved[peer] = self._known[peer] = addresses
            self._keep(peer)
        if stale:
            self._committer.submit(lambda w: w.executemany(
                "DELETE FROM peer_address WHERE peer = ?", [(p,) for p in stale]))

    def connected(self, channel: Channel) -> None:
        """A channel opened: remember where its peer can be dialled."""
        peer, addresses = channel.peer_id, addresses_of(channel)
        if not addresses:
            return
        self._known[peer] = addresses
        self._known.move_to_end(peer)
        if len(self._known) > _KNOWN:
            self._known.popitem(last=False)
        if peer in self._saved and self._saved[peer] != addresses:
            self._save(peer, addresses)
        if peer in self.kept:
            self._link.keep_peer(peer, addresses)  # the new addresses replace the old

    async def put(self, peer: str, put: Callable[[], Awaitable[None]]) -> None:
        """Put a message for ``peer`` into the outbox (``put``): its addresses are saved
        first (once per change), and it is dialled if it is not connected once the
        message is in (it may have dropped meanwhile); while the put is under way, the
        outbox's pump finding no rows for the peer releases nothing."""
        self._putting[peer] = self._putting.get(peer, 0) + 1
        try:
            addresses = self._addresses(peer)
            if addresses and self._saved.get(peer) != addresses:
                await self._committer.write(self._op(peer, addresses))
                self._saved[peer] = addresses
            await put()
        finally:
            if (left := self._putting[peer] - 1) > 0:
                self._putting[peer] = left
            else:
                del self._putting[peer]
        if peer not in self.kept and self._link.usable(peer) is None:
            self._keep(peer)  # (no addresses: discovery may find it, or it dials in)

    def owes(self, peer: str) -> bool:
        """Whether a message for ``peer`` is in the outbox or on its way in."""
        return peer in self._putting or self._waiting.has_rows(peer)

    def disconnected(self, peer: str) -> None:
        """A channel to ``peer`` ended: dialled again while messages wait for it."""
        # (Its peer entry may still be there: a target of a connected peer only waits.)
        if peer not in self.kept and (self._waiting.has_rows(peer) or peer in self._putting):
            self._keep(peer)

    def settled(self, peer: str, *, gone: bool) -> None:
        """The outbox's pump for ``peer`` has nothing in flight (``gone``: and no
        connection): once nothing waits for the peer, its target (and, when gone, its
        row) goes."""
        if (peer not in self.kept and not (gone and peer in self._saved)) \
                or peer in self._putting or self._waiting.has_rows(peer):
            return
        if peer in self.kept:
            self.kept.discard(peer)
            self._link.release_peer(peer)
            log.debug("nothing waits for %s: no longer dialled for the outbox", peer)
        if gone and self._saved.pop(peer, None) is not None:
            self._committer.submit(lambda db: db.execute(
                "DELETE FROM peer_address WHERE peer = ?", (peer,)))

    def _addresses(self, peer: str) -> tuple[str, ...] | None:
        # Those of its last connection, else those saved (a peer owed messages keeps
        # its row while other peers push it out of the bounded _known).
        return self._known.get(peer) or self._saved.get(peer)

    def _keep(self, peer: str) -> None:
        addresses = self._addresses(peer)
        if addresses:
            self.kept.add(peer)
            self._link.keep_peer(peer, addresses)

    def _save(self, peer: str, addresses: tuple[str, ...]) -> None:
        self._saved[peer] = addresses
        self._committer.submit(self._op(peer, addresses))

    @staticmethod
    def _op(peer: str, addresses: tuple[str, ...]) -> Op:
        text = json.dumps(list(addresses))

        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO peer_address (peer, addresses) VALUES (?, ?) "
                       "ON CONFLICT (peer) DO UPDATE SET addresses = excluded.addresses",
                       (peer, text))
        return op
