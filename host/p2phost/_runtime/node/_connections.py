"""A node's connections: admitting and handshaking them, serving each channel until it
ends, retiring duplicates, keepalive, and ``[node] peer-limit``.

The peer limit counts peers and clients, and accepted connections whose hello passed it
(until they join the peers): a node full of them refuses a connection at once, and an
accepted one is checked when the dialler's hello names the peer (this node's own dials
may have filled the limit meanwhile), before this node answers: a peer with no room is
refused in place of the hello, so neither end takes it for connected. Handshakes in
progress do not count against it: they are bounded on their own (``_admission``), so
connections that never say hello cannot keep peers out.

A full node shares its places among sources of peers as its handshakes do (a source
and its network are ``_admission``'s: an IPv4 host, an IPv6 /64, a broker inbox; a
relayed peer counts under the relay's host). When a new peer from a source arrives at
the limit and another source holds more of the peers that dialled in than the
newcomer's would with it, the node retires one peer of the most crowded such source
(ties: of the most crowded network) to make room: the one idle longest of those that
dialled in (never a peer this node dialled) that the outbox neither owes messages nor
keeps as a dial target. A newcomer from the most crowded source is refused as before,
so one host cannot push out the peers of others, nor churn its own; a client never has
a peer retired for it, and a source makes room once a minute at most (one coming and
going would retire a peer each visit).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from p2phost_sdk import (
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    Codec,
    Connection,
    HandshakeError,
    Identity,
    RateLimitedLog,
    Security,
    TaskOwner,
    Transport,
)

from ..._observability._links import handshake_reason
from ..._observability._tracing import HELLO_KEY as TRACE_HELLO
from .._errors import NodeConfigError, Refused
from ..delivery._delivery import Reliable
from ..messaging._dispatch import Dispatcher
from ..messaging._peers import PeerTable
from ..wire._channel import Channel
from ..wire._envelope import RAW_HELLO
from ..wire._handshake import (
    MAX_HELLO,
    MAX_HELLO_TOPICS,
    Admit,
    Hello,
    Room,
    announced,
    handshake,
    refuse,
)
from ..wire._refusal import PEER_LIMIT, refused_after_hellos
from ..wire._said import named, said
from ..wire._sealed import Sealer
from ._admission import HandshakeGate, Pending, source_of
from ._options import NodeOptions

log = logging.getLogger("p2phost.node")
#: How many peers that refused this node's hello after dialling it are remembered.
_REFUSERS = 256
#: Seconds before a source whose newcomer had a peer retired for it may have another.
MAKE_ROOM_EVERY = 60.0
# Sources remembered for that at most (past it, a newcomer makes no room: many sources
# making room at once is a flood, not a fair share).
_MADE_ROOM_KEPT = 1024
#: Call a plugin hook by name (the node's ``_notify``).
Notify = Callable[..., None]


class Connections:
    """The connections of one node: admission, handshakes, serving, keepalive."""

    def __init__(self, *, identity: Identity, options: NodeOptions, codecs: Mapping[str, Codec],
                 security: Security | None, sealer: Sealer | None, admit: Admit | None,
                 table: PeerTable, tasks: TaskOwner, reliable: Reliable,
                 dispatch: Dispatcher, dial_waiting: Callable[[], None],
                 addresses: list[str], notify: Notify) -> None:
        self.identity = identity
        self.options = options
        self._codecs = codecs
        self._security = security
        self._sealer = sealer
        self._admit = admit
        self._table = table
        self._tasks = tasks
        self._reliable = reliable
        self._dispatch = dispatch
        self._dial_waiting = dial_waiting
        # The node's own list, extended as it listens: shared, never copied.
        self._addresses = addresses
        self._notify = notify
        self._session = secrets.token_hex(8)
        self._gate = HandshakeGate(total=options.handshake_limit,
                                   per_source=options.handshake_limit_per_source,
                                   evict=self._evict)
        # Each accepted connection's handshake, while it is in progress.
        self._handshakes: dict[Pending, tuple[Connection, asyncio.Task[None]]] = {}
        # Accepted connections whose hello passed the peer limit, until they join.
        self._joining = 0
        # This node's dials of peers not connected yet, in their handshake.
        self._dialling = 0
        # Peers' channels accepted here, with the source each came from (the peer limit's
        # fair share: ``_crowding``).
        self._dialled_in: dict[Channel, Pending] = {}
        # Peers being retired to make room for a newcomer from a less crowded source:
        # their places are the newcomers' already.
        self._making_room: set[str] = set()
        # When a newcomer from each source last had a peer retired for it.
        self._made_room: dict[str, float] = {}
        self._clients: set[Channel] = set()
        # Channels whose peer said goodbye first and this node answered, with when the
        # keepalive first saw it owe the peer nothing there (``_linger``).
        self._lingering: dict[Channel, float] = {}
        self._refusals = RateLimitedLog(log, "refused connections")
        self._failures = RateLimitedLog(log, "failed handshakes")
        # Handshakes this node dialled that failed, by reason (the dialler reports the
        # error to whoever dialled; only counted here).
        self._dial_failures: Counter[str] = Counter()
        # Peers that dialled this node and refused its hello (their trust policy): each
        # redial of theirs is a rate-limited failed handshake here, not two info lines.
        self._refusers: dict[str, None] = {}
        #: Set when the node starts closing: new connections are refused from then on.
        self.closing = False
        #: Called when a peer dialling in is refused for want of room under the peer
        #: limit (set by the node: the outbox closes one idle connection it opened, so
        #: the peer's next dial gets in: node/_owed.py).
        self.full: Callable[[], None] = lambda: None
        #: The hello's ``schemas`` fields (node/_schemas.py), set by the node.
        self.schemas: dict[str, Any] = {}

    def hello(self, nonce: str) -> Hello:
        """This node's hello, as it goes out on a connection with ``nonce``."""
        return Hello(peer_id=self.peer_id, codecs=tuple(self._codecs),
                     topics=tuple(self._dispatch.topics), listen=announced(self._addresses),
                     session=self._session, nonce=nonce, name=self.options.name,
                     max_frame_size=self.options.max_frame_size,
                     extra={**self._reliable.hello_extra(), **self.schemas,
                            RAW_HELLO: 1,  # this node reads raw bodies (p2phost_sdk.Raw)
                            # Peers send trace contexts only to nodes that read them.
                            **({TRACE_HELLO: 1} if self._dispatch.tracer is not None else {}),
                            **({"client": True} if self.options.client else {})})

    def check_hello(self) -> None:
        """Raise :class:`NodeConfigError` when peers would not take this node's hello
        whole: over ``MAX_HELLO`` bytes no peer could connect (the dialler's error names a
        frame's size), past ``MAX_HELLO_TOPICS`` topics peers leave the rest out."""
        hello = self.hello(secrets.token_hex(8))
        count, fix = len(hello.topics), (
            "handle fewer topics on this node (run some of its apps on another node), or "
            "give them shorter names")
        if count > MAX_HELLO_TOPICS:
            raise NodeConfigError(f"this node handles {count} topics, over the "
                                  f"{MAX_HELLO_TOPICS} a peer takes from a hello: peers "
                                  "would not see the rest", fix=fix)
        size = len(hello.to_frame())
        if size > MAX_HELLO:
            raise NodeConfigError(f"this node's hello would be {size} bytes long with its "
                                  f"{count} topics, over the {MAX_HELLO} a peer takes: no "
                                  "peer could connect to it", fix=fix)

    def check_addresses(self) -> None:
        """Warn of listen addresses this node's hello and presence records leave out
        (:func:`announced`): peers could not dial it there."""
        listen = announced(self._addresses)
        if left_out := [a for a in self._addresses if a not in listen]:
            log.warning("%d of this node's %d listen addresses are not announced to peers "
                        "or by discovery (each takes at most %d, of at most %d bytes): %s "
                        "(fix: listen on fewer addresses: [node] listen)", len(left_out),
                        len(self._addresses), MAX_ADDRESSES, MAX_ADDRESS_LENGTH,
                        said(named(left_out)))

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        return self.identity.peer_id

    def snapshot(self) -> dict[str, int]:
        """The connection counters of ``peers --stats``."""
        return {
            "peers": len(self._table), "clients": len(self._clients),
            "handshaking": len(self._gate), "refused": self._refusals.count,
            "failed_handshakes": self._failures.count + self._dial_failures.total(),
        }

    def failure_reasons(self) -> dict[str, dict[str, int]]:
        """Failed handshakes by side (``accepted``, ``dialled``) and short reason (the
        metrics' labels)."""
        return {"accepted": dict(self._failures.reasons),
                "dialled": dict(self._dial_failures)}

    def channels(self) -> list[Channel]:
        """Every open channel: the peers' and the clients'."""
        channels = [c for p in self._table.peers.values() for c in p.channels]
        channels.extend(self._clients)
        return channels

    def flush_logs(self) -> None:
        """Log the counts the rate-limited logs held back."""
        self._refusals.flush()
        self._failures.flush()

    def _admitted(self) -> int:
        """Connections counted against [node] peer-limit: peers, clients, accepted
        connections whose hello passed it (never one still in its handshake), and this
        node's own dials of new peers under way (the dialler took room for them: peers
        accepted meanwhile took a node with peer-limit 2 to 3 peers)."""
        return (len(self._table) + len(self._clients) + self._joining + self._dialling
                - len(self._making_room))

    def _full(self, count: int) -> str | None:
        """Why ``count`` connections leave no room under [node] peer-limit (None: room);
        a connection is refused for it, so room is made for its next dial (``full``)."""
        limit = self.options.peer_limit
        if count < limit:
            return None
        self.full()
        return f"{PEER_LIMIT} ({limit})"

    def _room(self, entry: Pending, peer_id: str, client: bool) -> str | None:
        """The handshake's check of an accepted peer, once its hello names it: a new peer
        or client needs room beside the peers and clients there are (and takes it till
        it joins them); another connection of a known peer replaces or joins it. A
        handshake that lost its place to a newer connection is refused."""
        if entry.evicted is not None:
            return entry.evicted
        # (A peer being retired has given up its place: back, it needs one again.)
        if client or self._table.get(peer_id) is None or peer_id in self._making_room:
            count = self._admitted()
            # A client (a ping, a send from the CLI) is gone in a moment: it never costs
            # a peer its place, and a source makes room once a minute at most, so one
            # host coming and going cannot churn another source's peers.
            crowding = (self._crowding(entry.source, entry.network)
                        if count >= self.options.peer_limit and not client
                        and self._may_make_room(entry.source) else None)
            if crowding is not None:
                self._make_room(crowding, entry)
            elif (full := self._full(count)) is not None:
                return full
            entry.joining = True
            self._joining += 1
        # Its hello is in: no newer connection takes its place from here on.
        self._gate.leave(entry)
        return None

    async def accept(self, transport: Transport, connection: Connection) -> None:
        """A listener's callback: admit ``connection`` (or refuse it with a reason)."""
        address = connection.remote_address
        if self.closing:
            await connection.close()
            return
        count = self._admitted()
        # At the limit, a connection from a less crowded source goes on to its hello:
        # room is made for it then (``_room``).
        source, network = source_of(address, inbox=transport.inbox_based)
        fair = (count >= self.options.peer_limit and self._may_make_room(source)
                and self._crowding(source, network))
        entry = ((None if fair else self._full(count))
                 or self._gate.enter(address, inbox=transport.inbox_based))
        if isinstance(entry, str):
            self._refusals.warning("refused a connection from %s: %s", address, entry)
            self._tasks.spawn(refuse(connection, entry), "refuse")
            return
        task = self._tasks.spawn(self._accept_one(transport, connection, entry), "handshake")
        self._handshakes[entry] = (connection, task)

    def _crowding(self, source: str, network: str) -> Channel | None:
        """The channel of the peer to retire so that a new peer from ``source`` (in
        ``network``) gets in at the peer limit, or None (the newcomer is refused): of the
        sources holding more peers that dialled in than ``source`` would with the
        newcomer, the most crowded one (ties: the most crowded network) with a peer to
        spare (``_spare``), the one idle longest."""
        held: dict[str, dict[str, Channel]] = {}  # source -> peer id -> its channel
        networks: dict[str, str] = {}  # source -> its network
        crowds: Counter[str] = Counter()  # network -> its peers
        for channel, came in self._dialled_in.items():
            if channel.peer_id in self._making_room:
                continue
            peers = held.setdefault(came.source, {})
            if channel.peer_id not in peers:
                crowds[came.network] += 1
            peers[channel.peer_id] = channel
            networks[came.source] = came.network
        own = len(held.get(source, ())) + 1
        for crowded in sorted(held, key=lambda s: (len(held[s]), crowds[networks[s]]),
                              reverse=True):
            if len(held[crowded]) <= own:
                break
            spare = sorted((c for c in held[crowded].values() if self._spare(c)),
                           key=lambda c: c.last_seen)
            # (The outbox's look reads the database: last, and only as far as needed.)
            for channel in spare:
                if not self._reliable.keeps(channel.peer_id):
                    return channel
        return None

    def _may_make_room(self, source: str) -> bool:
        """Whether a newcomer from ``source`` may have a peer retired for it: not if one
        from there had, within the last ``MAKE_ROOM_EVERY`` seconds."""
        now, made = time.monotonic(), self._made_room
        last = made.get(source)
        if last is not None and now - last < MAKE_ROOM_EVERY:
            return False
        if len(made) >= _MADE_ROOM_KEPT:  # (older than the window: nothing to remember)
            for old in [s for s, at in made.items() if now - at >= MAKE_ROOM_EVERY]:
                del made[old]
        return len(made) < _MADE_ROOM_KEPT

    def _spare(self, channel: Channel) -> bool:
        """Whether ``channel``'s peer may be retired for a newcomer (but for the
        outbox's look): every channel of it dialled in, none closing."""
        peer = self._table.get(channel.peer_id)
        return peer is not None and not any(c.initiator or c.closing for c in peer.channels)

    def _make_room(self, channel: Channel, newcomer: Pending) -> None:
        """Retire ``channel``'s peer (``_crowding``'s pick) for a newcomer's place."""
        peer = self._table.get(channel.peer_id)
        assert peer is not None
        came = self._dialled_in[channel]
        reason = (f"{PEER_LIMIT} ({self.options.peer_limit}): this node made room for a "
                  f"peer from a less crowded source than {came.source}")
        self._refusals.warning("closed the connection of peer %s (%s), idle %.0fs, to make "
                               "room under the peer limit for a peer from %s: %s",
                               channel.peer_id, channel.address,
                               time.monotonic() - channel.last_seen, newcomer.source, reason)
        self._making_room.add(channel.peer_id)
        self._made_room[newcomer.source] = time.monotonic()
        for each in list(peer.channels):
            self.retire(each, reason)

    def _evict(self, entry: Pending) -> None:
        """The gate's call: ``entry`` lost its place to a newer connection."""
        self._refusals.warning("closed a connection from %s in its handshake, to make room "
                               "for a newer one: %s", entry.address, entry.evicted)
        connection, task = self._handshakes.pop(entry)
        self._tasks.spawn(self._evicted(connection, task, entry), "evict")

    async def _evicted(self, connection: Connection, task: asyncio.Task[None],
                       entry: Pending) -> None:
        assert entry.evicted is not None
        # The GOODBYE first (the dialler reads it as a refusal: it waits and retries),
        # then the handshake ends (a connection closed under it may not wake it).
        await refuse(connection, entry.evicted)
        task.cancel()

    async def _accept_one(self, transport: Transport, connection: Connection,
                          entry: Pending) -> None:
        address = connection.remote_address
        try:
            channel = await self.open(connection, initiator=False, address=address,
                                      inbox=transport.inbox_based,
                                      room=partial(self._room, entry))
            if channel not in self._clients:  # (its task has not run: it is open)
                self._dialled_in[channel] = entry
        except Refused as exc:  # no room once its hello named the peer
            if entry.evicted is None:
                self._refusals.warning("refused a connection from %s: %s", address, exc)
        except HandshakeError as exc:
            if entry.evicted is None:  # (else its refusal is logged, and closed it)
                self._failures.warning("closed connection from %s: handshake failed: %s",
                                       address, exc, reason=handshake_reason(exc))
        finally:
            if entry.joining:
                self._joining -= 1
            self._handshakes.pop(entry, None)
            self._gate.leave(entry)

    async def open(self, connection: Connection, *, initiator: bool, address: str,
                   inbox: bool, expected_peer_id: str | None = None,
                   room: Room | None = None) -> Channel:
        """Handshake (securing stream connections), then serve the channel. ``room``: an
        accepted connection's check of the peer limit (``_room``)."""
        if not initiator:
            return await self._open(connection, initiator=False, address=address,
                                    inbox=inbox, expected_peer_id=expected_peer_id,
                                    room=room)
        new = expected_peer_id is None or self._table.get(expected_peer_id) is None
        self._dialling += new
        try:
            return await self._open(connection, initiator=True, address=address, inbox=inbox,
                                    expected_peer_id=expected_peer_id)
        except HandshakeError as exc:
            self._dial_failures[handshake_reason(exc)] += 1
            raise
        finally:
            self._dialling -= new

    async def _open(self, connection: Connection, *, initiator: bool, address: str,
                    inbox: bool, expected_peer_id: str | None,
                    room: Room | None = None) -> Channel:
        nonce = secrets.token_hex(8)
        hello = self.hello(nonce)
        done = await handshake(
            connection, hello=hello, codecs=self._codecs, identity=self.identity,
            # Inbox media carry no stream to secure: they get message-level security.
            security=self._sealer if inbox else self._security, initiator=initiator,
            expected_peer_id=expected_peer_id,
            timeout=self.options.handshake_timeout,
            admit=self._admit, client=self.options.client, room=room,
        )
        client = not initiator and done.hello.extra.get("client") is True
        if self.closing:
            await refuse(done.connection, "the node is shutting down")
            raise HandshakeError("the node is shutting down")
        channel = Channel(done, address=address, initiator=initiator, local_nonce=nonce,
                          on_message=self._dispatch.on_message,
                          on_reply=self._dispatch.on_reply,
                          on_fields=self._dispatch.received,
                          on_traced=self._dispatch.received_traced,
                          on_replied=self._dispatch.replied,
                          outbox_limit=self.options.outbox_limit,
                          max_frame_size=self.options.max_frame_size,
                          write_timeout=self.options.keepalive_timeout,
                          duplicate_grace=self.options.handshake_timeout)
        if client:
            # A client may share a peer's id (its project's): kept out of the peer table,
            # it neither replaces nor duplicates that peer's connection, and goes with
            # its last reply.
            self._clients.add(channel)
            self._tasks.spawn(self._serve_client(channel), f"client {channel.peer_id[:12]}")
            return channel
        peer, new, retire = self._table.add(channel)
        # A peer being retired that is back (it dialled in, or this node dialled it)
        # before its old channels ended holds a place again: counted from here on.
        self._making_room.discard(channel.peer_id)
        self._reliable.connected(channel)
        self._tasks.spawn(self._serve(channel), f"channel {channel.peer_id[:12]}")
        for loser, reason, mutual in retire:
            self.retire(loser, reason, mutual=mutual)
        if new:
            log.log(logging.DEBUG if channel.peer_id in self._refusers else logging.INFO,
                    "connected to %s (%s, codec %s)", channel.peer_id, address,
                    channel.codec.content_type)
            self._dispatch.lifecycle(peer.peer_id, "on_peer_connected", channel.info)
            self._notify("p2phost_peer_connected", peer=channel.info)
        return channel

    async def _serve_client(self, channel: Channel) -> None:
        try:
            await channel.run()
        finally:
            self._clients.discard(channel)

    async def _serve(self, channel: Channel) -> None:
        reason = "the node shut down"
        try:
            reason = await channel.run()
        finally:
            # Runs even if this task is cancelled: a peer entry never outlives its channel.
            self._reliable.disconnected(channel)
            log.debug("connection to %s (%s) ended: %s", channel.peer_id, channel.address,
                      reason)
            refusal = refused_after_hellos(channel.remote_reason)
            peer = self._table.remove(channel, reason, refusal)
            self._dialled_in.pop(channel, None)
            self._lingering.pop(channel, None)
            if peer is not None:
                self._making_room.discard(peer.peer_id)
                refused = None if channel.initiator else refusal
                self._refusers.pop(peer.peer_id, None)
                if refused is not None:  # it dialled us, then refused our hello
                    self._refusers[peer.peer_id] = None
                    if len(self._refusers) > _REFUSERS:
                        del self._refusers[next(iter(self._refusers))]
                    self._failures.warning(
                        "peer %s (%s) refused this node's hello: %s", peer.peer_id,
                        channel.address, channel.remote_reason,
                        reason=handshake_reason(refused))
                log.log(logging.DEBUG if refused is not None else logging.INFO,
                        "disconnected from %s (%s): %s", peer.peer_id, channel.address, reason)
                self._dispatch.lifecycle(peer.peer_id, "on_peer_lost", channel.info, reason)
                self._dispatch.peer_gone(peer.peer_id, reason)
                self._notify("p2phost_peer_lost", peer=channel.info, reason=reason)
                self._dial_waiting()

    def retire(self, channel: Channel, reason: str, *, mutual: bool = False
               ) -> asyncio.Task[None]:
        """Say goodbye on ``channel`` and close it once the peer's work on it is done
        (:meth:`_retire`), in a task owned here: one who awaits it and is cancelled
        meanwhile (a timeout around ``disconnect``) leaves no connection half closed.
        (The task starts from the caller's context: ``serving_peer`` tells whether a
        handler of the peer's own messages asked.)"""
        return self._tasks.spawn(self._retire(channel, reason, mutual), "retire")

    async def _retire(self, channel: Channel, reason: str, mutual: bool) -> None:
        """Say goodbye on ``channel``; close it once the peer's answering goodbye came
        (so a request it sent as ours crossed the wire has arrived: within the handshake
        timeout) and, unless ``mutual`` (a duplicate: the connection the peer keeps
        carries the rest), once its requests are answered and this node's requests to
        it made before have their replies (within the drain timeout,
        ``Dispatcher.settled``); then what is queued is sent (1 s at most)."""
        log.debug("retiring connection to %s (%s): %s", channel.peer_id, channel.address, reason)
        channel.goodbye(reason)
        # The requests to the peer now (any made from here on goes on a new connection).
        replies = [] if mutual else self._dispatch.replies_due((channel.peer_id,))
        try:
            async with asyncio.timeout(self.options.handshake_timeout):
                await channel.peer_done.wait()
        except TimeoutError:
            pass
        if not mutual:
            await self._dispatch.settled(channel, replies, self.options.drain_timeout)
        await channel.flush(1.0)
        await channel.close(reason)

    def _linger(self, channel: Channel, now: float, timeout: float) -> bool:
        """A channel on which both said goodbye, the peer first (where this node said it
        first, it closes the channel itself once its work is done: ``_retire``): the peer
        closes it once its work is done (docs/wire.md 4.2). One that keeps it open
        instead (its PINGs satisfy the keepalive) would hold a place of the peer limit
        for good: closed here (True) after ``timeout`` in which this node owed the peer
        nothing (no request of ours waits for its reply, nothing of its in a mailbox to
        answer or acknowledge)."""
        if self._dispatch.busy_with(channel.peer_id):
            self._lingering.pop(channel, None)
            return False
        if now - self._lingering.setdefault(channel, now) < timeout:
            return False
        self._tasks.spawn(channel.close("the peer said goodbye, then kept the connection "
                                        "open"), "close")
        return True

    async def keepalive(self) -> None:
        """Ping idle channels; close those silent past ``keepalive-timeout``. Runs until
        cancelled."""
        interval, timeout = self.options.keepalive_interval, self.options.keepalive_timeout
        while True:
            await asyncio.sleep(min(interval, timeout) / 2)
            self._refusals.tick()
            self._failures.tick()
            now = time.monotonic()
            # The clients' too: they hold places of the peer limit as peers do.
            for channel in self.channels():
                # A peer that takes what we write is alive, even while it sends
                # nothing (its PONG waits behind a large reply it reads slowly).
                idle = now - max(channel.last_seen, channel.progress_at)
                if channel.ended or channel.closed_here:
                    continue
                if channel.remote_reason and channel.closing and not self.closing \
                        and self._linger(channel, now, timeout):
                    continue
                if channel.stalled:
                    # Our reader waits for room in a full mailbox: the peer is not
                    # judged, but it hears from us (our PINGs need no reading), or it
                    # would judge us silent: everything it sent may sit in our kernel,
                    # so it sees nothing waiting either.
                    if now - channel.pinged >= interval:
                        channel.ping()
                    continue
                # Nor is one whose large frame is still arriving, steadily.
                if idle >= timeout and not channel.writing and not channel.peer_took() \
                        and not channel.peer_gave():
                    partly = channel.connection.partly_received()
                    log.warning("%s %s (%s) sent nothing%s, and took nothing sent to it, "
                                "for %.0fs: closing the connection (keepalive timeout)",
                                "client" if channel in self._clients else "peer",
                                channel.peer_id, channel.address,
                                f" (bar a trickle of the frame it began: {partly} "
                                "bytes of it so far)" if partly else "", idle)
                    self._tasks.spawn(channel.close(f"keepalive timeout ({idle:.0f}s "
                                                    "without traffic)"), "close")
                elif idle >= interval or now - channel.pinged >= interval:
                    # Busy channels too, now and then: their round trip for `top`.
                    channel.ping()
