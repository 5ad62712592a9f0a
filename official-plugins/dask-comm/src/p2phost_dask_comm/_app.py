"""The dask-comm app: Dask comms as streams of messages on topic ``dask-comm``.

The app keeps the node's streams (``_streams``), opens them for connectors and hands
the ones peers open to the listener they name. A stream lives on the connection to its
peer: when the peer is lost, its streams end, as a TCP comm ends when its socket does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from p2phost_sdk import (
    App,
    Message,
    Messenger,
    P2PHostError,
    PeerInfo,
    PeerUnavailable,
    Raw,
    RemoteError,
    RequestTimeout,
    TaskOwner,
    handler,
)

from ._errors import NoListener, PeerNotReached
from ._streams import CLOSE, OPEN, PART, Stream, parse_part

log = logging.getLogger("p2phost.plugin.dask-comm")

#: The topic Dask comms travel on.
DASK_TOPIC = "dask-comm"
#: Called with every stream a peer opens to a listener; it owns the stream from then on.
Accept = Callable[[Stream], None]

DEFAULT_CHUNK = MAX_CHUNK = 1024 * 1024
DEFAULT_BUFFER = 256 * 1024 * 1024
#: Comms one peer may hold open to this node (Dask pools a few dozen per peer).
MAX_STREAMS_PER_PEER = 1024
_OPEN_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0


class DaskCommApp(App):
    """Carries Dask comms between nodes; the Dask backend opens and listens through it."""

    name = "dask-comm"
    # Parts of large frames queue here; per-peer order is what keeps a stream in order.
    mailbox_size = 4096

    def __init__(self, *, chunk_size: int = DEFAULT_CHUNK,
                 stream_buffer: int = DEFAULT_BUFFER) -> None:
        # A node's connection queues about 1 MiB before senders wait, and refuses a
        # frame that would take it past twice that: a part must fit in the slack.
        if not 1024 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"[config.dask-comm] chunk-size must be 1024 to {MAX_CHUNK} "
                             f"bytes, not {chunk_size}")
        self.chunk_size, self.stream_buffer = chunk_size, stream_buffer
        self._streams: dict[tuple[str, int, bool], Stream] = {}
        self._listeners: dict[str, Accept] = {}
        self._ids = itertools.count(1)
        self._names = itertools.count(1)
        self._tasks = TaskOwner("dask-comm", logger=log)
        self._arrivals: dict[str, set[asyncio.Future[None]]] = {}
        self.dropped = 0  # messages for streams that no longer exist

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, name: str, accept: Accept) -> str:
        """Serve streams opened to ``name`` ("" is the node's default Dask listener);
        a taken "" gets the next free number. Returns the name used."""
        if name in self._listeners:
            if name:
                raise NoListener(f"a Dask listener named {name!r} already runs on this node",
                                 fix="listen on p2phost:// to get a free name")
            name = str(next(self._names))
            while name in self._listeners:
                name = str(next(self._names))
        self._listeners[name] = accept
        return name

    def remove_listener(self, name: str) -> None:
        """Stop serving ``name`` (streams already open stay open)."""
        self._listeners.pop(name, None)

    # -- streams -----------------------------------------------------------------------

    def _stream(self, peer: str, sid: int, *, mine: bool) -> Stream:
        async def send(body: list[Any] | Raw) -> None:
            await self.node.send(peer, DASK_TOPIC, body)

        async def here(body: list[Any] | Raw) -> None:
            if isinstance(body, Raw):  # a part: its view goes across as it is
                sid, opener, _ = parse_part(memoryview(body.parts[0]))
                body = [PART, sid, opener, body.parts[1]]
            self._route(peer, body)

        stream = Stream(peer, sid, mine=mine, send=here if peer == self.node.peer_id else send,
                        chunk=self.chunk_size, limit=self.stream_buffer,
                        on_closed=self._closed)
        self._streams[stream.key] = stream
        return stream

    def _closed(self, stream: Stream, reason: str, tell: bool) -> None:
        self._streams.pop(stream.key, None)
        if tell:
            self._tasks.spawn(self._tell_closed(stream, reason), f"close {stream.sid}")

    async def _tell_closed(self, stream: Stream, reason: str) -> None:
        body = [CLOSE, stream.sid, int(stream.mine), reason]
        if stream.peer == self.node.peer_id:
            self._route(stream.peer, body)
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.node.send(stream.peer, DASK_TOPIC, body)
        except (P2PHostError, TimeoutError) as exc:
            log.debug("could not tell %s that comm %d closed: %s", stream.peer, stream.sid, exc)

    def connected(self, peer: str) -> bool:
        """Whether the node has a connection to ``peer`` now."""
        return any(p.peer_id == peer for p in self.node.peers())

    def address_of(self, peer: str) -> str:
        """The transport address of the connection to ``peer`` ("" when none)."""
        return next((p.address for p in self.node.peers() if p.peer_id == peer), "")

    async def wait_connected(self, peer: str) -> None:
        """Wait until the node is connected to ``peer`` (its discovery dials it); the
        caller bounds the wait (Dask's ``connect`` does, and retries)."""
        while not self.connected(peer):
            arrival = asyncio.get_running_loop().create_future()
            waiting = self._arrivals.setdefault(peer, set())
            waiting.add(arrival)
            try:
                await arrival
            finally:
                waiting.discard(arrival)
                if not waiting:
                    self._arrivals.pop(peer, None)

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        """Wake the connects waiting for this peer."""
        for arrival in self._arrivals.get(peer.peer_id, ()):
            if not arrival.done():
                arrival.set_result(None)

    async def open(self, peer: str, name: str) -> Stream:
        """Open a stream to the Dask listener ``name`` of ``peer`` (connected already).

        A stream to this node itself (Dask's scheduler and workers in one process) never
        leaves the process: the two ends feed each other."""
        stream = self._stream(peer, next(self._ids), mine=True)
        if peer == self.node.peer_id:
            try:
                self._accept(peer, stream.sid, name)
            except LookupError as exc:
                stream.end(str(exc))
                raise NoListener(f"p2phost://{peer}: {exc}",
                                 fix="check the address the Dask scheduler or worker "
                                     "printed") from exc
            return stream
        try:
            await self.node.request(peer, DASK_TOPIC, [OPEN, stream.sid, name],
                                    timeout=_OPEN_TIMEOUT)
        except RemoteError as exc:
            stream.end(str(exc))
            raise NoListener(f"p2phost://{peer}/{name}: {exc}".replace("/:", ":"),
                             fix="check the address the Dask scheduler or worker printed") \
                from exc
        except (PeerUnavailable, RequestTimeout) as exc:
            stream.end(str(exc))
            raise PeerNotReached(f"cannot open a Dask comm to {peer}: {exc}") from exc
        return stream

    @handler(DASK_TOPIC)
    async def on_message(self, message: Message) -> Any:
        """A stream's message from a peer (or a request to open one)."""
        body = message.body
        if isinstance(body, memoryview | bytes):  # a raw part of a large message
            sid, opener, data = parse_part(body)
            self._route(message.sender, [PART, sid, opener, data])
            return None
        if not isinstance(body, list) or len(body) < 3 or not isinstance(body[1], int):
            raise ValueError("dask-comm: not a dask-comm message")
        op, sid = body[0], body[1]
        if op == OPEN:
            return self._accept(message.sender, sid, body[2])
        if len(body) != 4:
            raise ValueError("dask-comm: not a dask-comm message")
        self._route(message.sender, body)
        return None

    def _route(self, sender: str, body: list[Any]) -> None:
        # The sender's opener flag says whose stream id it is.
        stream = self._streams.get((sender, body[1], not body[2]))
        if stream is None:
            self.dropped += 1
            return
        try:
            stream.feed(body[0], body[3])
        except ValueError as exc:  # the peer broke the protocol: this comm cannot go on
            stream.end(str(exc), tell=True)
            raise

    def _accept(self, peer: str, sid: int, name: Any) -> str:
        accept = self._listeners.get(name) if isinstance(name, str) else None
        if accept is None:
            raise LookupError(f"no Dask listener named {name!r} on this node")
        if (peer, sid, False) in self._streams:
            raise ValueError(f"dask-comm: stream {sid} is open already")
        if sum(1 for s in self._streams.values() if s.peer == peer) >= MAX_STREAMS_PER_PEER:
            raise LookupError(f"{MAX_STREAMS_PER_PEER} Dask comms with this peer are open "
                              "already")
        accept(self._stream(peer, sid, mine=False))
        return "ok"

    async def on_peer_lost(self, peer: PeerInfo, reason: str) -> None:
        """Every stream with the peer ends, as a comm does when its socket closes."""
        for stream in [s for s in self._streams.values() if s.peer == peer.peer_id]:
            stream.end(f"the connection to {peer.peer_id} was lost: {reason}")

    def spawn(self, work: Any, name: str) -> None:
        """Run ``work`` (a coroutine) as a task the app owns until it stops."""
        self._tasks.spawn(work, name)

    async def start(self, node: Messenger) -> None:
        """Keep the node."""
        self.node = node

    async def stop(self) -> None:
        """End every stream and the tasks the app runs."""
        for stream in list(self._streams.values()):
            stream.end("the p2phost node stopped")
        await self._tasks.close(_CLOSE_TIMEOUT)
