"""The security kind: authenticate a peer and protect a connection's frames."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

from ._errors import HandshakeError, TransportError
from ._identity import Identity
from ._transport import Connection, FrameSink

_T = TypeVar("_T")


class SecureConnection(Connection, ABC):
    """A connection whose remote peer id has been proven by a handshake."""

    #: The proven peer id of the other end.
    remote_peer_id: str | None = None


class LayeredConnection(SecureConnection):
    """A secure connection over another one: each of its frames is opened (decrypted,
    authenticated) into this connection's frames by :meth:`_open`.

    It reads with the inner connection's ``recv_many``, or in push mode (when the inner
    connection has it) opens each read in the inner connection's callback and hands the
    frames on, with pauses passed through. A subclass implements :meth:`_open` and the
    sending side; an error :meth:`_open` raises closes the connection, after the
    frames it opened before the error are handed over (they were authenticated).
    """

    def __init__(self, inner: Connection) -> None:
        self._inner = inner
        #: Opened frames not yet handed over.
        self._frames: deque[bytes] = deque()
        self._sink: FrameSink | None = None
        self._sink_ended = False
        # A failure that came after frames opened in the same read: raised once they
        # were handed over (recv, recv_many), as push mode hands them on first.
        self._failure: TransportError | None = None
        self.local_address = inner.local_address
        self.remote_address = inner.remote_address

    def partly_received(self) -> int | None:
        """The inner connection's bytes of a frame under way (a subclass adds what it
        assembled itself)."""
        return self._inner.partly_received()

    @abstractmethod
    def _open(self, frames: list[bytes]) -> None:
        """Open the inner connection's ``frames`` into ``self._frames``, in order; raise
        a ``TransportError`` (``ConnectionClosed``, ``FrameTooLarge``) for one that fails."""

    async def recv(self) -> bytes:
        """The next frame, opened."""
        while not self._frames:
            await self._receive()
        return self._frames.popleft()

    async def recv_many(self) -> list[bytes]:
        """Every frame opened from what arrived together, in order."""
        frames = self._frames
        while not frames:
            await self._receive()
        out = list(frames)
        frames.clear()
        return out

    async def _receive(self) -> None:
        if self._failure is not None:
            raise self._failure
        frames = await self._inner.recv_many()
        try:
            self._open(frames)
        except TransportError as exc:
            await self._inner.close()
            if not self._frames:
                raise
            self._failure = exc

    def push(self, sink: FrameSink) -> bool:
        """Push mode through the inner connection, when it has one (see
        ``Connection.push``); False while opened frames wait for ``recv``."""
        if self._frames or self._sink is not None:
            return False
        self._sink = sink
        if self._inner.push(self):
            return True
        self._sink = None
        return False

    def pause_reading(self) -> None:
        """Stop the inner connection's reads."""
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        """Let the inner connection read again."""
        self._inner.resume_reading()

    def frames_received(self, frames: list[bytes]) -> None:
        """Push mode: the inner connection's frames, opened and handed on (those
        before one that fails, then the failure)."""
        sink = self._sink
        if sink is None or self._sink_ended:
            return
        self._push_opened(sink, self._open, frames)

    def _push_opened(self, sink: FrameSink, open_: Callable[[_T], None], data: _T) -> None:
        """Push mode: ``open_(data)`` into ``self._frames``, then those frames handed to
        ``sink`` (the ones opened before a failure, then the failure)."""
        failure: Exception | None = None
        try:
            open_(data)
        except Exception as exc:
            # A bug in _open too ends this connection only, through the sink (raised
            # into the transport's callback, it would reach the event loop's handler).
            failure = exc
            self._inner.pause_reading()
        if self._frames:
            out = list(self._frames)
            self._frames.clear()
            sink.frames_received(out)
        if failure is not None:
            self.connection_ended(failure)

    def connection_ended(self, error: Exception) -> None:
        """Push mode: the inner connection ended, so this one did."""
        if self._sink is not None and not self._sink_ended:
            self._sink_ended = True
            self._sink.connection_ended(error)


class Security(ABC):
    """Wraps a raw connection: runs a handshake, then protects every frame."""

    #: The protocol name agreed between peers, e.g. ``"noise"``.
    protocol: ClassVar[str] = ""
    #: The largest frame a secured connection carries each way (plugins set it from
    #: ``PluginContext.max_frame_size``); larger ones raise ``FrameTooLarge``.
    max_frame_size: int = 16 * 1024 * 1024
    #: The largest frame the handshake sends or accepts on the raw connection: the host
    #: refuses larger incoming frames until the handshake is done.
    max_handshake_frame: ClassVar[int] = 65536
    #: The largest frame the secured connection sends or accepts on the raw connection
    #: after the handshake, when the protocol bounds it below the node's max frame size
    #: (a Noise message is at most 65535 bytes); None: no bound of its own. The host
    #: keeps larger incoming frames refused at their length, never buffered.
    max_transport_frame: ClassVar[int | None] = None

    @abstractmethod
    async def secure(
        self,
        connection: Connection,
        *,
        identity: Identity,
        initiator: bool,
        expected_peer_id: str | None,
        timeout: float,
    ) -> SecureConnection:
        """Run the handshake on ``connection`` within ``timeout`` seconds.

        Raises ``HandshakeError`` when the peer cannot prove an identity, or proves one
        other than ``expected_peer_id`` (when given).
        """


async def run_handshake(
    connection: Connection, handshake: Awaitable[SecureConnection], *, protocol: str,
    timeout: float,
) -> SecureConnection:
    """Await ``handshake`` on ``connection`` with the failure rules every plugin shares.

    It must finish within ``timeout`` seconds; a timeout or a transport failure becomes a
    :class:`HandshakeError` naming ``protocol`` and the remote address, and on any failure
    (cancellation included) ``connection`` is closed: a half-done handshake is useless.
    """
    where = connection.remote_address or "the peer"
    done = False
    try:
        async with asyncio.timeout(timeout):
            secured = await handshake
        done = True
        return secured
    except TimeoutError:
        raise HandshakeError(
            f"{protocol} handshake with {where} did not finish within {timeout:g}s"
        ) from None
    except TransportError as exc:
        raise HandshakeError(f"{protocol} handshake with {where} failed: {exc}") from exc
    finally:
        if not done:
            await connection.close()
