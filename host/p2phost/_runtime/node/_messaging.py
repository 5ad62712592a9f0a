"""What apps see of a node as their :class:`p2phost_sdk.Messenger`: connect, send,
request, publish, store and dead-letter, each routed to the piece that does it (the
dialler, the dispatcher, acknowledged delivery, stored letters)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING, Any

from p2phost_sdk import Identity, PeerUnavailable, TraceContext, is_peer_id

from ..delivery._delivery import Reliable
from ..messaging._dispatch import Dispatcher
from ..messaging._peers import PeerTable
from ..messaging._pending import deadline_of, timed_out
from ..wire._channel import Channel
from ._dialler import Link
from ._letters import Letters

if TYPE_CHECKING:
    from ._connections import Connections


class MessagingAPI:
    """The messaging half of :class:`~._node.Node` (which builds what it uses)."""

    identity: Identity
    _dialler: Link
    _dispatch: Dispatcher
    _reliable: Reliable
    _letters: Letters
    _table: PeerTable
    _acked_topics: set[str]
    _connections: Connections

    async def connect(self, address: str, *, expected_peer_id: str | None = None) -> str:
        """Dial ``address`` (or reuse the connection to it); returns the peer id.

        With ``expected_peer_id`` (what discovery announced), a peer that cannot prove
        that id fails the handshake.
        """
        try:
            return await self._dialler.connect(address, expected_peer_id=expected_peer_id)
        except PeerUnavailable as exc:
            raise self._letters.explain(address, exc) from exc.__cause__

    async def disconnect(self, peer: str, *, reason: str = "closed by an app") -> bool:
        """Close the connections to ``peer`` after a goodbye giving ``reason`` (see
        :class:`p2phost_sdk.Messenger`); False when none was open."""
        entry = self._table.get(peer)
        if entry is None:
            return False
        channels = [c for c in entry.channels if not c.ended]
        self._dialler.hold(peer)  # not undone at once by the outbox's redial
        # Shielded: a caller cancelled meanwhile stops waiting, the retirements go on.
        # (Exceptions returned: one the node's close cancelled must not reach a caller
        # that was not, nor be left unretrieved.)
        await asyncio.shield(asyncio.gather(*(self._connections.retire(c, reason)
                                               for c in channels), return_exceptions=True))
        # Gone from peers() when this returns, unless a connection made meanwhile (by
        # this node or the peer) keeps it there.
        if all(c in channels for c in entry.channels):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await entry.gone.wait()
        return bool(channels)

    async def _reach(self, peer: str, within: float = math.inf) -> Channel:
        # Not a peer id: an address, dialled (a malformed one is named as such).
        # ``within``: a request's timeout, which bounds the wait for a kept connection
        # (TimeoutError when it passed first).
        if "://" in peer or not is_peer_id(peer):
            peer = await self.connect(peer)
            channel = self._dialler.usable(peer)
            if channel is not None:
                return channel
        if peer == self.identity.peer_id:
            raise PeerUnavailable("a node cannot send to itself")
        # The peer may be replacing a duplicate connection (it dialled this node as this
        # node dialled it): its kept one joins within the handshake timeout.
        entry = self._table.get(peer)
        if entry is not None:
            wait = self._connections.options.handshake_timeout
            if (channel := await entry.kept(min(wait, within))) is not None:
                return channel
            if within < wait and entry.replacing():
                raise TimeoutError
        raise PeerUnavailable(
            f"peer {peer} is not connected (fix: connect to it by address first: "
            "node.connect(ADDRESS) in a program, [node] connect in p2phost.toml, or a "
            "discovery plugin that finds it; or send to its address; a topic declared "
            "mode = \"at-least-once\" under [delivery.TOPIC] waits for it in the outbox)")

    def stores_letters(self, address: str) -> bool:
        """Whether a message to ``address`` is stored in the peer's inbox rather than
        sent on a connection (an inbox address, its peer not connected now)."""
        return self._letters.stores(address)

    async def store(self, address: str, topic: str, body: Any, *,
                    key: str | None = None) -> str:
        """Store a message for the peer of ``address`` (``MEDIUM#PEERID``) in its inbox,
        whether it runs or not; returns the medium's URL once it has the message."""
        return await self._letters.store(address, topic, body, key)

    async def send(self, peer: str, topic: str, body: Any, key: str | None = None) -> None:
        """Deliver ``body`` on ``topic`` to ``peer`` (a peer id or an address), no reply
        (through the outbox on acknowledged topics: see :class:`p2phost_sdk.Messenger`;
        stored in the peer's inbox for an inbox address whose peer is not connected)."""
        # (``key`` is not keyword-only here, as it is in the Messenger apps are typed
        # against: CPython 3.11 specializes no call of a function with keyword-only
        # parameters, 0.6 % of a one-way message's instructions.)
        entry = self._table.peers.get(peer)
        # An inbox address has "://": a connected peer's id (which has none) skips the
        # search, any other peer id the check's coroutine.
        if entry is None and "://" in peer and await self._letters.storing(peer):
            await self._letters.store(peer, topic, body, key)
            return
        if topic in self._acked_topics:
            if await self._reliable.send(peer, topic, body, key):
                return
            entry = self._table.peers.get(peer)  # (again: it waited)
        # (Dialler.usable's common case inline: the peer's current channel, still usable)
        channel = entry.current if entry is not None else None
        if channel is None or not channel.usable:
            channel = self._dialler.usable(peer)
            if channel is None:
                channel = await self._reach(peer)
                # It waited for the connection (a kept one: Peer.kept, or a dial): the
                # peer's hello now says whether it takes the topic with acknowledgements
                # (then the outbox sends it, not this plain path).
                if topic in self._acked_topics \
                        and await self._reliable.send(peer, topic, body, key):
                    return
        frame = self._dispatch.try_send(channel, topic, body)
        if frame is not None:  # (queued at once, with no coroutine more, while there is room)
            await self._dispatch.send_frame(channel, topic, frame)

    async def request(self, peer: str, topic: str, body: Any, *,
                      timeout: float | None = 10.0) -> Any:
        """Send a request and return the reply body (see :class:`p2phost_sdk.Messenger`)."""
        # (Dialler.usable, inline; None for an address: no peer id has "://")
        entry = self._table.peers.get(peer)
        channel = entry.best() if entry is not None else None
        if channel is None:
            if "://" in peer and await self._letters.storing(peer):
                return await self._letters.request(peer, topic, body, timeout)
            channel, timeout = await self._reach_within(peer, topic, timeout)
        return await self._dispatch.request(channel, topic, body, timeout)

    async def _reach_within(self, peer: str, topic: str,
                            timeout: float | None) -> tuple[Channel, float | None]:
        """``_reach`` for a request: a wait for the kept connection (``Peer.kept``) is
        part of its ``timeout`` (RequestTimeout when it passes first); the channel, and
        what is left of the timeout. (An address's dial is not: as before.)"""
        # A bad timeout is refused before any wait or dial: it says so, not "peer X is
        # not connected". (math.inf, like None, has no deadline.)
        deadline_of(timeout)
        if not _seconds(timeout):
            return await self._reach(peer), timeout
        if "://" in peer or not is_peer_id(peer):  # an address to dial
            return await self._reach(peer), timeout
        assert isinstance(timeout, int | float)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            channel = await self._reach(peer, timeout)
        except TimeoutError:
            raise timed_out(peer, topic, timeout) from None
        return channel, max(0.0, timeout - (loop.time() - started))

    async def publish(self, topic: str, body: Any) -> int:
        """Send to every connected peer that handles ``topic``; returns how many."""
        channels: list[Channel] = []
        replacing = []
        for peer in list(self._table.peers.values()):
            if (channel := peer.best()) is not None:
                channels.append(channel)
            # A peer replacing a duplicate connection (it dialled this node as this node
            # dialled it) is connected: its kept one joins within the handshake timeout.
            elif peer.replacing() and any(topic in c.topics for c in peer.channels):
                replacing.append(peer)
        if replacing:
            wait = self._connections.options.handshake_timeout
            kept = await asyncio.gather(*(p.kept(wait) for p in replacing))
            channels.extend(c for c in kept if c is not None)
        count = 0
        if topic in self._acked_topics:
            count, channels = await self._reliable.publish(channels, topic, body)
        return count + (await self._dispatch.publish(channels, topic, body) if channels else 0)

    def trace_context(self, root: str = "") -> TraceContext | None:
        """None: this node does not trace (a tracing node's ``_otel.Tracing`` puts its
        own in its place; see :class:`p2phost_sdk.Messenger`)."""
        return None

    async def dead_letter(self, topic: str, body: bytes, *, source: str, reason: str,
                          content_type: str = "") -> int:
        """Keep a payload that never became a message in the dead-letter store (see
        :class:`p2phost_sdk.Messenger`); its id."""
        return await self._reliable.bury(topic, body, source=source, reason=reason,
                                         content_type=content_type)


def _seconds(timeout: object) -> bool:
    """Whether a request's ``timeout`` is a finite number of seconds, 0 or more."""
    return isinstance(timeout, int | float) and timeout.__class__ is not bool \
        and 0 <= timeout < math.inf
