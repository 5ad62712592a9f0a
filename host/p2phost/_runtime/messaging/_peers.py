"""The peer table: which channels lead to which peer, and which one to use.

Two nodes that dial each other at the same moment end up with two connections. Both ends
keep the same one without talking about it: each connection is named by (the dialler's
peer id, the dialler's per-connection nonce), and the smaller name wins. A connection from
a *new session* of a known peer (it restarted) replaces the old one outright.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .._errors import ConnectionRefusedByPeer
from ..wire._channel import DUPLICATE, Channel


@dataclass(eq=False)
class Peer:
    """A connected peer: its channels (usually one) and an event set when it is gone."""

    peer_id: str
    channels: list[Channel] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    current: Channel | None = None
    #: Why its last channel ended, set as ``gone`` is.
    reason: str = ""
    #: The peer's refusal that ended it, when its GOODBYE was one (set as ``gone`` is).
    refusal: ConnectionRefusedByPeer | None = None
    #: Woken when a channel joins or ends (``kept`` waits on them).
    changes: list[asyncio.Future[None]] = field(default_factory=list)

    def best(self) -> Channel | None:
        """The channel to send new messages on, or None while all are closing."""
        current = self.current
        if current is not None and current.usable:
            return current
        self.current = next((c for c in self.channels if c.usable), None)
        return self.current

    def any_open(self) -> Channel | None:
        """A channel that can still carry replies (usable, or closing but not ended)."""
        return self.best() or next((c for c in self.channels if not c.ended), None)

    def replacing(self) -> bool:
        """Whether the peer retired a channel as a duplicate that is still open, and
        this node has not answered: the connection it keeps instead is in its handshake
        here (it joins, or the peer closes the duplicate, within the handshake timeout;
        the channel answers once that passed)."""
        return any(c.remote_reason == DUPLICATE and not c.closing and not c.ended
                   for c in self.channels)

    async def kept(self, timeout: float) -> Channel | None:
        """The channel to send on, waiting up to ``timeout`` seconds while the peer
        replaces a duplicate connection: in that window it has no usable channel here,
        yet it is not gone (two nodes that dialled each other at once)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (channel := self.best()) is None and self.replacing():
            change = loop.create_future()
            self.changes.append(change)
            try:
                async with asyncio.timeout_at(deadline):
                    await change
            except TimeoutError:
                return None
            finally:
                self.changes.remove(change)
        return channel

    def changed(self) -> None:
        """A channel joined or ended: wake what ``kept`` waits."""
        for change in self.changes:
            if not change.done():
                change.set_result(None)


def answer_on(closing: Channel, other: Channel | None) -> Channel:
    """Where to answer (a reply, an ACK) what came on ``closing`` (a goodbye was said on
    it): the peer's usable channel ``other`` when it is of the same session. The two ends
    of a retired duplicate each close it once the other said goodbye, so the peer may
    stop reading it before an answer posted there arrives; the peer takes replies and
    ACKs on any of its channels. (Another session's channel is not the asker's: the peer
    restarted, and a new session's request ids repeat the old one's.)"""
    if other is not None and other.usable and other.hello.session == closing.hello.session:
        return other
    return closing


def channel_key(channel: Channel, local_peer_id: str) -> tuple[str, str]:
    """The name both ends give a connection: (dialler's peer id, dialler's nonce)."""
    if channel.initiator:
        return local_peer_id, channel.local_nonce
    return channel.peer_id, channel.hello.nonce


class PeerTable:
    """Peers by id, with the duplicate-connection rule."""

    def __init__(self, local_peer_id: str) -> None:
        self.local_peer_id = local_peer_id
        self.peers: dict[str, Peer] = {}

    def __len__(self) -> int:
        return len(self.peers)

    def get(self, peer_id: str) -> Peer | None:
        """The peer, if connected."""
        return self.peers.get(peer_id)

    def add(self, channel: Channel) -> tuple[Peer, bool, list[tuple[Channel, str, bool]]]:
        """Add a new channel. Returns the peer, whether it is newly connected, and the
        channels to retire: (channel, reason, whether the other end retires it too).

        A duplicate is retired by both ends, a stale connection of a restarted peer only
        here (the peer has forgotten it)."""
        peer = self.peers.get(channel.peer_id)
        new = peer is None
        if peer is None:
            peer = self.peers[channel.peer_id] = Peer(channel.peer_id)
        retire: list[tuple[Channel, str, bool]] = []
        for old in peer.channels:
            if old.closing:
                continue
            if old.hello.session != channel.hello.session:
                retire.append((old, "the peer restarted (a new session replaced this one)",
                               False))
            elif channel_key(old, self.local_peer_id) < channel_key(channel, self.local_peer_id):
                retire.append((channel, DUPLICATE, True))
            else:
                retire.append((old, DUPLICATE, True))
        peer.channels.append(channel)
        losers = {id(c) for c, _, _ in retire}
        if peer.current is None or id(peer.current) in losers:
            peer.current = next((c for c in peer.channels if id(c) not in losers), None)
        peer.changed()
        return peer, new, retire

    def remove(self, channel: Channel, reason: str = "",
               refusal: ConnectionRefusedByPeer | None = None) -> Peer | None:
        """Drop a channel that ended (for ``reason``, the peer's ``refusal`` if it was
        one); returns the peer when it was its last channel."""
        peer = self.peers.get(channel.peer_id)
        if peer is None or channel not in peer.channels:
            return None
        peer.channels.remove(channel)
        if peer.current is channel:
            peer.current = None
        peer.changed()
        if peer.channels:
            return None
        del self.peers[channel.peer_id]
        peer.reason, peer.refusal = reason, refusal
        peer.gone.set()
        return peer
