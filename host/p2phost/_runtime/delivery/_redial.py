"""Redialling the peers the outbox holds messages for.

A message sent to a peer id waits in the outbox until that peer acknowledges it; the
peer must be connected for that. A peer reached once (``connect()`` then ``send(peer,
...)``) is no dial target of its own: when the connection is lost, or this node
restarts, nothing would dial it again and its messages would wait for ever. So while
the outbox holds messages for a peer id, the node keeps the peer as a dial target
(the dialler's redial loop and backoff, record source ``outbox``) at the addresses it
knows the peer by: the address it dialled the peer at and the listen addresses of the
peer's hello. Those are kept in the delivery database (``peer_address``) for every peer
the node connects to, owed messages or not, and before the first message for a peer is
put in, so a node restarted with messages for a peer id dials it, and so does a node
that sends to a peer id it reached in an earlier run. Once nothing waits for the peer,
the target goes (an open connection stays, unless the outbox's own dial opened it and
peers owed messages wait for its room: :mod:`..node._owed`); its row stays. The rows
are bounded: the 4096 peers most recently seen, and every peer owed messages (never
forgotten); past the bound, peers that only ever dialled in go first, so strangers
dialling in with throwaway identities (a hello's listen list is theirs to write) cannot
push out the peers this node dialled (discovery's, ``[node] connect``'s, ``connect()``'s,
the outbox's): those are forgotten only for other peers this node dialled. A message
for a peer id the node knows no address for waits until the peer connects: that is
said once per peer (a warning with the fix), and ``p2phost doctor`` lists them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from p2phost_sdk import RateLimitedLog

from .._limited import WarnedOnce
from ..wire._channel import Channel
from ._committer import Committer
from ._outjournal import Waiting
from ._store import Op

log = logging.getLogger("p2phost.delivery")
#: Peers whose addresses are kept (those that only dialled in, then the least recently
#: seen, forgotten first; never one owed messages): a later send to one dials it, in
#: this run or the next.
_KNOWN = 4096
#: Addresses kept per peer at most (a hello lists 16 at most; one more it was dialled at).
_ADDRESSES = 17


class Dialled(Protocol):
    """The peers a node dials (its dialler's targets)."""

    def __contains__(self, peer_id: str) -> bool:
        """Whether ``peer_id`` is dialled (discovery found it, or the outbox owes it)."""


class Dialling(Protocol):
    """What redialling needs from the node (its dialler provides it)."""

    def keep_peer(self, peer_id: str, addresses: Sequence[str]) -> None:
        """Keep dialling ``peer_id`` at ``addresses`` (with the dialler's backoff)."""

    def release_peer(self, peer_id: str) -> None:
        """Stop dialling ``peer_id`` for the outbox (an open connection stays, unless
        it is idle and the outbox's dial opened it while others wait for room)."""

    def usable(self, peer_id: str) -> Channel | None:
        """The open channel to ``peer_id`` messages may go on, if any."""

    @property
    def targets(self) -> Dialled:
        """The peers being dialled (discovery's finds among them)."""


def unknown_peer(peer: str, count: int | None = None) -> tuple[str, str]:
    """What to say of (``count``) messages waiting for ``peer``, a peer id this node
    knows no address for, and the fix."""
    what = "messages" if count is None else f"{count} message{'s' * (count != 1)}"
    return (f"{what} for {peer} wait in the outbox, but this node knows no address to "
            "dial it at (it never connected to it and no discovery plugin found it, or "
            f"it has connected to {_KNOWN} other peers since): they go out only when that "
            "peer connects to this node",
            "connect to it once by address (node.connect(ADDRESS) in a program, [node] "
            "connect in p2phost.toml), or run a discovery plugin that finds it")


def saved_addresses(text: str) -> tuple[str, ...]:
    """The addresses a ``peer_address`` row holds (none of a damaged row: as if the peer
    were never seen)."""
    try:
        listed = json.loads(text)
    except ValueError:
        return ()
    return tuple(a for a in listed if isinstance(a, str)) if isinstance(listed, list) else ()


def addresses_of(channel: Channel) -> tuple[str, ...]:
    """Where ``channel``'s peer can be dialled: the address this node dialled it at
    (where a peer that dialled in came from is no listener), and its hello's listen
    addresses."""
    found = [channel.address] if channel.initiator else []
    found.extend(a for a in channel.hello.listen if isinstance(a, str))
    return tuple(dict.fromkeys(found))[:_ADDRESSES]


class Redial:
    """Where the peers this node connected to can be dialled; the peers the outbox holds
    messages for, kept as dial targets."""

    def __init__(self, link: Dialling, committer: Committer, waiting: Waiting) -> None:
        self._link = link
        self._committer = committer
        self._waiting = waiting
        #: Peer -> the addresses it was last connected at, as its ``peer_address`` row
        #: holds them (bounded: the least recently seen first, forgotten first).
        self._known: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: Peer -> the addresses its row holds, committed.
        self._saved: dict[str, tuple[str, ...]] = {}
        #: Known peers this node dialled at least once (the rest only dialled in, and
        #: are forgotten before these: anyone can dial in, as any number of peers).
        self._dialled: set[str] = set()
        #: How far past the bound ``_known`` may grow before peers are forgotten again
        #: (those owed messages, which are not forgotten, and a margin).
        self._over = 0
        #: Peers kept as dial targets for the outbox.
        self.kept: set[str] = set()
        #: Peer -> messages on their way into the outbox (not in its rows yet): the
        #: peer is owed them, whatever the rows say meanwhile.
        self._putting: dict[str, int] = {}
        #: Peers said to have no known address (each once; many, in few lines).
        self._unknown = WarnedOnce()
        self._unknown_lines = RateLimitedLog(log, "peers with no known address")

    def start(self, db: sqlite3.Connection, destinations: Sequence[str]) -> None:
        """At start: the saved addresses; every peer id the outbox holds messages for is
        dialled at its own (one without is warned about)."""
        for peer, text, dialled in db.execute("SELECT peer, addresses, dialled FROM "
                                              "peer_address ORDER BY seen"):
            if addresses := saved_addresses(text):
                self._saved[peer] = self._known[peer] = addresses
                if dialled:
                    self._dialled.add(peer)
        for peer in destinations:
            if "://" not in peer:  # (an address is dialled as it is)
                self._keep(peer, warn=True)
        self._bound()

    def connected(self, channel: Channel) -> None:
        """A channel opened: remember (and save) where its peer can be dialled."""
        peer, addresses = channel.peer_id, addresses_of(channel)
        if not addresses:
            return
        if channel.initiator:  # (for good: a peer this node dialled may dial in later)
            self._dialled.add(peer)
        self._known[peer] = addresses
        self._known.move_to_end(peer)
        self._save(peer, addresses)  # (its time too: the least recently seen go first)
        self._bound()
        if peer in self.kept:
            self._link.keep_peer(peer, addresses)  # the new addresses replace the old

    async def put(self, peer: str, put: Callable[[], Awaitable[None]]) -> None:
        """Put a message for ``peer`` into the outbox (``put``): its addresses are saved
        first (unless they are), and it is dialled if it is not connected once the
        message is in (it may have dropped meanwhile); while the put is under way, the
        outbox's pump finding no rows for the peer releases nothing."""
        self._putting[peer] = self._putting.get(peer, 0) + 1
        try:
            addresses = self._known.get(peer)
            if addresses and self._saved.get(peer) != addresses:
                await self._committer.write(self._op(peer, addresses, peer in self._dialled))
                self._saved[peer] = addresses
            await put()
        finally:
            if (left := self._putting[peer] - 1) > 0:
                self._putting[peer] = left
            else:
                del self._putting[peer]
        if peer not in self.kept and self._link.usable(peer) is None:
            self._keep(peer, warn=True)

    def owes(self, peer: str) -> bool:
        """Whether a message for ``peer`` is in the outbox or on its way in."""
        return peer in self._putting or self._waiting.has_rows(peer)

    def disconnected(self, peer: str) -> None:
        """A channel to ``peer`` ended: dialled again while messages wait for it."""
        # (Its peer entry may still be there: a target of a connected peer only waits.)
        if peer not in self.kept and self.owes(peer):
            self._keep(peer)

    def settled(self, peer: str, *, gone: bool) -> None:
        """The outbox's pump for ``peer`` has nothing in flight (``gone``: and no
        connection): once nothing waits for the peer, its target goes. Its addresses
        stay, gone or not: a later send to the peer dials it there."""
        if peer not in self.kept or self.owes(peer):
            return
        self.kept.discard(peer)
        self._link.release_peer(peer)
        log.debug("nothing waits for %s: no longer dialled for the outbox", peer)

    def flush_logs(self) -> None:
        """Report the warnings the rate limit held back (the node closing)."""
        self._unknown_lines.flush()

    def _keep(self, peer: str, *, warn: bool = False) -> None:
        addresses = self._known.get(peer)
        if addresses:
            self.kept.add(peer)
            self._link.keep_peer(peer, addresses)
        elif warn and peer not in self._link.targets and self._unknown.first(peer, ""):
            # It may yet dial in, or discovery find it: not an error, but a send that
            # would otherwise wait for ever without a word.
            text, fix = unknown_peer(peer)
            self._unknown_lines.warning("%s (fix: %s)", text, fix, fields={"peer": peer})

    def _save(self, peer: str, addresses: tuple[str, ...]) -> None:
        def then() -> None:
            if self._known.get(peer) == addresses:  # (not forgotten meanwhile)
                self._saved[peer] = addresses
        self._committer.submit(self._op(peer, addresses, peer in self._dialled), then)

    def _bound(self) -> None:
        """Forget peers past the bound, those that only dialled in first, each kind the
        least recently seen first, but none owed messages (found once for a round that
        forgets a sixteenth of the bound: reading what the outbox holds is not for every
        connection)."""
        if len(self._known) <= _KNOWN + self._over:
            return
        owed = {*self._waiting.destinations(), *self._putting, *self.kept}
        keep = _KNOWN - _KNOWN // 16
        # (A stable sort: the least recently seen first within each kind.)
        forgotten = sorted((p for p in self._known if p not in owed),
                           key=self._dialled.__contains__)[:max(0, len(self._known) - keep)]
        for peer in forgotten:
            del self._known[peer]
            self._saved.pop(peer, None)
            self._dialled.discard(peer)
        self._over = max(0, len(self._known) - keep)
        if forgotten:
            self._committer.submit(lambda db: db.executemany(
                "DELETE FROM peer_address WHERE peer = ?", [(p,) for p in forgotten]))

    @staticmethod
    def _op(peer: str, addresses: tuple[str, ...], dialled: bool) -> Op:
        text, seen = json.dumps(list(addresses)), time.time()

        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO peer_address (peer, addresses, seen, dialled) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (peer) DO UPDATE SET "
                       "addresses = excluded.addresses, seen = excluded.seen, "
                       "dialled = excluded.dialled", (peer, text, seen, int(dialled)))
        return op
