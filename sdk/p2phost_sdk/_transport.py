"""The transport kind: how frames move between two nodes.

A transport serves one or more address schemes (``tcp``, ``mem``, ``redis``...). It
listens on an address and hands every accepted :class:`Connection` to the host, and it
dials an address to open one. A connection moves whole frames: what one side passes to
:meth:`Connection.send` arrives as one :meth:`Connection.recv` on the other side, in
order. One-way media (brokers, databases) give the same semantics through inboxes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from ._errors import FrameTooLarge

if TYPE_CHECKING:  # (the SDK loads asyncio only where it is used)
    import asyncio


def check_frame_size(frame: bytes, maximum: int) -> None:
    """Refuse an outgoing ``frame`` over ``maximum`` bytes with ``FrameTooLarge``."""
    if len(frame) > maximum:
        raise FrameTooLarge(f"frame of {len(frame)} bytes is over the maximum of {maximum} bytes")


#: Called by a listener for every accepted connection; the host owns it from then on.
AcceptHandler = Callable[["Connection"], Awaitable[None]]


class FrameSink(Protocol):
    """Where a connection in push mode hands its frames (see :meth:`Connection.push`).

    The host implements it. Both methods are called from the event loop's own callbacks
    (a protocol's ``data_received``), never from inside :meth:`Connection.push`, and
    never raise.
    """

    def frames_received(self, frames: list[bytes]) -> None:
        """Every whole frame of one read, in order (at least one)."""

    def connection_ended(self, error: Exception) -> None:
        """The connection ended (called once, after every frame before the end):
        ``ConnectionClosed`` for a close, another ``TransportError`` for a protocol
        error such as an oversized or truncated frame."""


class Connection(ABC):
    """A bidirectional, ordered stream of frames to one remote endpoint."""

    #: The address this end is reachable at, as a URL (may be empty for dialers).
    local_address: str = ""
    #: The address of the other end, as a URL.
    remote_address: str = ""
    #: The remote peer id when the medium itself names it (inbox-based media), else None.
    remote_peer_id: str | None = None
    #: The largest frame this connection carries when its medium allows less than the
    #: node's ``max_frame_size`` (a broker's message size limit), else None. The host
    #: refuses a larger message before sending it, with a clear error.
    max_frame_size: int | None = None

    @abstractmethod
    async def send(self, frame: bytes) -> None:
        """Send one frame. Raises ``FrameTooLarge`` or ``ConnectionClosed``."""

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames in order; transports may override to batch them."""
        for frame in frames:
            await self.send(frame)

    def unsent(self) -> int | None:
        """Bytes of frames already handed to :meth:`send` or :meth:`send_many` that the
        transport still holds (not yet taken by the operating system), or None when it
        cannot tell (the default).

        The host's write timeout then counts time without progress, so a peer that reads
        slowly but steadily is not cut off; with None, a whole write must be taken within
        the timeout. (A write is cancelled only when the peer took nothing for the
        timeout, and the connection is then closed.)
        """
        return None

    def partly_received(self) -> int | None:
        """Bytes received so far of a frame not yet whole (0 when none is under way), or
        None when the transport cannot tell (the default).

        The host's keepalive asks it only of a connection that has handed over no frame
        for a while: a large frame still arriving is traffic, so a slow but steady
        sender is not cut off as silent. It must cost nothing per frame: report what
        the transport's reassembly holds anyway.
        """
        return None

    def try_send(self, frame: bytes) -> bool:
        """Hand ``frame`` over at once if that needs no waiting; False otherwise.

        An optional fast path (the default always says False): the host then calls
        :meth:`send`, which also reports any error. It saves a scheduling round for a
        lone message, where latency matters most.
        """
        return False

    def try_send_many(self, frames: list[bytes]) -> bool:
        """Hand every one of ``frames`` over at once, in order, if that needs no
        waiting; False otherwise, having sent none of them.

        An optional fast path (the default always says False): the host then calls
        :meth:`send_many`, which also reports any error. The host calls it as a run of
        frames queues up in one turn of its loop (the replies to many requests in
        flight), so the peer starts on the first of them while this node makes the
        rest, and for its writer's batches, which then need no write timeout.
        """
        return False

    def limit_incoming(self, size: int | None) -> None:
        """Refuse incoming frames over ``size`` bytes (None: the transport's own maximum).

        The host caps frames small until the handshake is done, so an unauthenticated
        peer cannot make the node buffer a large first frame. Transports that read a
        length before the frame (streams) must honour it; the default does nothing (for
        media whose messages the medium itself limits).
        """

    @abstractmethod
    async def recv(self) -> bytes:
        """The next frame. Raises ``ConnectionClosed`` when the other end is gone."""

    async def recv_many(self) -> list[bytes]:
        """The next frames: at least one, in order, all that arrived together.

        Streams override it to hand over every whole frame of one read at once, so the
        host handles a burst in one pass; the default wraps :meth:`recv`.
        """
        return [await self.recv()]

    def push(self, sink: FrameSink) -> bool:
        """Hand every later frame to ``sink`` from the transport's own callback.

        An optional fast path (the default says False, and the host reads with
        :meth:`recv_many`): a stream transport hands each read's frames to
        ``sink.frames_received`` from its protocol's ``data_received``, which saves the
        loop turn between that callback and a task waiting in ``recv_many``. It says
        False while it holds received frames that ``recv_many`` must hand over first
        (the host asks again after its next read). Once it said True, ``recv`` and
        ``recv_many`` are no longer called, and the host stops and restarts the flow
        with :meth:`pause_reading` and :meth:`resume_reading` (its backpressure), so a
        transport that says True must honour them.
        """
        return False

    def pause_reading(self) -> None:
        """Push mode: hand over no more frames until :meth:`resume_reading` (stop reading
        the socket, so the sender is slowed by the medium's own flow control)."""

    def resume_reading(self) -> None:
        """Push mode: hand over frames again after :meth:`pause_reading`."""

    @abstractmethod
    async def close(self) -> None:
        """Close both directions. Idempotent."""


class DeliveredFrame(bytes):
    """A received frame that its medium holds until the node is done with it.

    Media that redeliver what was not acknowledged (brokers, databases) return these from
    :meth:`Connection.recv`. The host calls :attr:`ack` exactly once when it is done with
    the frame: at once for control frames, after the app's handler ran for messages. A
    node killed before that leaves the frame on the medium, to be delivered again.
    """

    ack: Callable[[], None]

    def __new__(cls, data: bytes, ack: Callable[[], None]) -> DeliveredFrame:
        """``data`` as a frame that calls ``ack`` once handled."""
        frame = super().__new__(cls, data)
        frame.ack = ack
        return frame


class Listener(ABC):
    """An open listening endpoint; ``addresses`` are the real ones (port 0 resolved)."""

    addresses: list[str]
    #: For a listener whose addresses take connections only once something is granted
    #: (a relay's reservation): an event it sets then, and the host says "listening on"
    #: only when it is set. None (the default): they take connections at once.
    serving: asyncio.Event | None = None

    @abstractmethod
    async def close(self) -> None:
        """Stop accepting connections. Idempotent."""


class Transport(ABC):
    """A way to move frames, for the address schemes in ``schemes``."""

    #: The URL schemes this transport serves, e.g. ``("tcp",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: True for media that hold a peer's inbox (brokers, databases): addresses carry the
    #: peer id as the URL fragment, and there is no stream to run a channel handshake on.
    inbox_based: ClassVar[bool] = False

    @abstractmethod
    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Listen on ``address`` and call ``accept`` for every new connection."""

    @abstractmethod
    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Open a connection to ``address`` within ``timeout`` seconds.

        Raises ``TransportError`` with a clear reason when it cannot.
        """

    def check_address(self, address: str) -> None:
        """Raise ``AddressError`` when ``address`` is malformed for this transport,
        before anything dials or listens on it (the host checks ``p2phost.toml``'s
        addresses at start). The default accepts every address: ``dial`` finds out."""

    async def close(self) -> None:
        """Release what the transport holds (client pools, broker connections)."""
