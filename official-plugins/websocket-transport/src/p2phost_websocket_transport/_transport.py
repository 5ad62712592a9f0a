"""Frames over WebSocket: one binary message per frame, on the ``websockets`` library.

A WebSocket starts as an HTTP request, so it passes where only HTTP does: through HTTP
proxies (the ``proxy`` setting) and reverse proxies that forward ``Upgrade`` (the path in
the address lets one share a port). Compression is off: frames are usually encrypted by
the node's security plugin, and compressing before encrypting leaks what is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Literal

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import (
    ConnectionClosed as WsClosed,
)
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidProxy,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol

from p2phost_sdk import (
    AcceptHandler,
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    Listener,
    Transport,
    TransportError,
    check_frame_size,
)

from ._address import WsAddress
from ._limit import CappedClientConnection, CappedServerConnection, CappedWebSocket
from ._outq import kernel_unsent

#: The WebSocket subprotocol both ends name: a plain WebSocket client is refused clearly.
SUBPROTOCOL = Subprotocol("p2phost")
_CLOSE_TIMEOUT = 2.0
# websockets logs every connection opened and closed, and every refused upgrade (a
# wrong path, a browser page), at INFO: one client could fill the node's log. The node
# already says what matters; websockets' warnings and errors (its own bugs) still show.
_QUIET = logging.getLogger("p2phost.websocket")
_QUIET.setLevel(logging.WARNING)
#: A close reason's room in a close frame (125 bytes, less the code).
_REASON = 123


def _host_port(name: object) -> tuple[str, int] | None:
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None


class WebSocketConnection(Connection):
    """One WebSocket carrying frames both ways, each as one binary message."""

    def __init__(self, websocket: CappedWebSocket, *, max_frame_size: int, local_address: str,
                 remote_address: str) -> None:
        self._ws = websocket
        self._max = max_frame_size
        self._closed = False
        # Bytes of frames handed to send_many and not yet to the websocket (it writes
        # each to the socket's transport at once, then waits while that is full).
        self._queued = 0
        self.local_address = local_address
        self.remote_address = remote_address

    async def send(self, frame: bytes) -> None:
        """Send one frame (waits while the socket's write buffer is over its limit)."""
        check_frame_size(frame, self._max)
        await self._send(frame)

    async def _send(self, frame: bytes) -> None:
        if self._closed:
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")
        try:
            await self._ws.send(frame)
        except WsClosed as exc:
            raise self._closed_error(exc) from exc
        except OSError as exc:
            raise ConnectionClosed(f"connection to {self.remote_address} lost: {exc}") from exc

    async def send_many(self, frames: list[bytes]) -> None:
        """Send several frames in order; all are checked before any is sent."""
        queued = 0
        for frame in frames:
            check_frame_size(frame, self._max)
            queued += len(frame)
        self._queued += queued
        try:
            for frame in frames:
                queued -= len(frame)
                self._queued -= len(frame)
                await self._send(frame)
        finally:
            self._queued -= queued  # those a failure left unsent

    def unsent(self) -> int:
        """Bytes handed over and not yet acknowledged by the peer: frames send_many has
        not yet given the websocket, what the socket's transport holds, and on Linux the
        socket's send queue (``SIOCOUTQ``). A peer that reads slowly takes from the
        kernel's buffer (megabytes) long before the transport's own moves, so this is
        how the host sees a slow but steady reader take a large frame."""
        transport = self._ws.transport
        return self._queued + int(transport.get_write_buffer_size()) \
            + kernel_unsent(transport.get_extra_info("socket"))

    def partly_received(self) -> int:
        """Bytes received so far of the message under way (0 when none is)."""
        return self._ws.partly_received()

    def limit_incoming(self, size: int | None) -> None:
        """Refuse incoming frames over ``size`` bytes (None: ``max_frame_size`` again);
        a frame in assembly is refused as soon as what arrived of it passes ``size``."""
        self._ws.cap = None if size is None or size >= self._max else size

    async def recv(self) -> bytes:
        """The next frame."""
        if self._closed:
            raise ConnectionClosed(f"connection to {self.remote_address} is closed")
        websocket = self._ws
        websocket.take()
        try:
            message = await websocket.recv()
        except WsClosed as exc:
            raise self._closed_error(exc) from exc
        finally:
            websocket.taking = False
        if isinstance(message, str):
            await self.close()
            raise TransportError(f"{self.remote_address} sent a text message; p2phost frames "
                                 "are binary messages (is that a p2phost node?)")
        cap = websocket.cap
        if cap is not None and len(message) > cap:  # (it came whole in one read)
            reason = f"a frame of {len(message)} bytes, over the maximum of {cap} bytes"
            await self.close(CloseCode.MESSAGE_TOO_BIG, reason)
            raise FrameTooLarge(f"{self.remote_address} sent {reason}")
        return message

    def _closed_error(self, exc: WsClosed) -> TransportError:
        if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
            cap = self._ws.cap
            return FrameTooLarge(f"{self.remote_address} sent a frame over the maximum of "
                                 f"{self._max if cap is None else cap} bytes")
        if isinstance(exc, ConnectionClosedOK):
            return ConnectionClosed(f"{self.remote_address} closed the connection")
        if isinstance(exc, ConnectionClosedError) and exc.rcvd is None and exc.sent is None:
            return ConnectionClosed(f"connection to {self.remote_address} lost")
        return ConnectionClosed(f"connection to {self.remote_address} closed: {exc}")

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """The closing handshake (``code`` and ``reason`` say why), or an abort if the
        other end does not answer in time."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._ws.close(code, reason.encode()[:_REASON].decode(errors="ignore"))
        except (TimeoutError, OSError):
            self._ws.transport.abort()


class WebSocketListener(Listener):
    """A WebSocket server on one port (several sockets for a wildcard host)."""

    def __init__(self, server: Server, addresses: list[str]) -> None:
        self._server = server
        self.addresses = addresses

    async def close(self) -> None:
        """Stop accepting; open connections belong to the node and stay open."""
        # Close the listening sockets now (websockets' own close runs as a task).
        self._server.server.close()
        self._server.close(close_connections=False)

    async def wait_closed(self, timeout: float) -> None:
        """Until every connection it accepted is closed; those still open then are cut."""
        self._server.close(close_connections=False)
        try:
            async with asyncio.timeout(timeout):
                await self._server.wait_closed()
        except TimeoutError:
            for connection in list(self._server.connections):
                connection.transport.abort()


class WebSocketTransport(Transport):
    """``ws://HOST:PORT/PATH``: listen and dial with WebSockets."""

    schemes = ("ws",)

    def __init__(
        self, *, max_frame_size: int = 16 * 1024 * 1024, max_queue: int = 16,
        proxy: str = "env", origins: Sequence[str] = (), handshake_timeout: float = 10.0,
    ) -> None:
        if max_queue < 1:
            raise TransportError(f"max-queue must be at least 1, got {max_queue}")
        self.max_frame_size = max_frame_size
        self.max_queue = max_queue
        self.proxy = proxy
        self.origins = list(origins)
        self.handshake_timeout = handshake_timeout
        self._listeners: list[WebSocketListener] = []

    def check_address(self, address: str) -> None:
        """AddressError unless ``address`` is ``ws://HOST:PORT[/PATH]``."""
        WsAddress.parse(address)

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Listen on ``address``; port 0 picks a free port (see ``Listener.addresses``)."""
        where = WsAddress.parse(address)
        local = where.url

        def check(connection: ServerConnection, request: Request) -> Response | None:
            if request.path.split("?", 1)[0] != where.path:
                return connection.respond(HTTPStatus.NOT_FOUND, "no p2phost node here\n")
            offered = request.headers.get_all("Sec-WebSocket-Protocol")
            if not any(SUBPROTOCOL in [p.strip() for p in o.split(",")] for o in offered):
                return connection.respond(
                    HTTPStatus.BAD_REQUEST,
                    f"a p2phost node: ask for the {SUBPROTOCOL!r} WebSocket subprotocol\n")
            return None

        async def handler(websocket: ServerConnection) -> None:
            assert isinstance(websocket, CappedServerConnection)
            remote = _host_port(websocket.remote_address)
            connection = WebSocketConnection(
                websocket, max_frame_size=self.max_frame_size, local_address=local,
                remote_address=WsAddress(*remote).url if remote else "")
            await accept(connection)
            # websockets closes the connection when this handler returns: the node owns
            # it now, so this waits for the node (or the peer) to close it.
            await websocket.wait_closed()

        try:
            server = await serve(
                handler, where.host, where.port, process_request=check,
                origins=[None, *(Origin(o) for o in self.origins)],
                subprotocols=[SUBPROTOCOL], compression=None, server_header=None,
                open_timeout=self.handshake_timeout, ping_interval=None,
                close_timeout=_CLOSE_TIMEOUT, max_size=self.max_frame_size,
                max_queue=self.max_queue, logger=_QUIET, reuse_address=True,
                create_connection=CappedServerConnection,
            )
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "address already in use" if in_use else (exc.strerror or str(exc))
            raise TransportError(f"cannot listen on {address}: {reason}") from exc
        addresses = []
        for sock in server.sockets:
            name = _host_port(sock.getsockname())
            if name is not None:
                addresses.append(where.with_port(*name).url)
        local = addresses[0]
        listener = WebSocketListener(server, addresses)
        self._listeners.append(listener)
        return listener

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Connect to ``address`` within ``timeout`` seconds."""
        where = WsAddress.parse(address)
        proxy: str | Literal[True] | None = True if self.proxy == "env" else (self.proxy or None)
        try:
            async with asyncio.timeout(timeout):
                websocket = await connect(
                    where.url, subprotocols=[SUBPROTOCOL], compression=None,
                    proxy=proxy,
                    open_timeout=timeout, ping_interval=None, close_timeout=_CLOSE_TIMEOUT,
                    max_size=self.max_frame_size, max_queue=self.max_queue, logger=_QUIET,
                    user_agent_header="p2phost", create_connection=CappedClientConnection,
                )
        except TimeoutError:
            raise TransportError(f"cannot reach {address}: no answer within {timeout:g}s") from None
        except ConnectionRefusedError as exc:
            raise TransportError(f"cannot reach {address}: connection refused (nothing "
                                 "listens there)") from exc
        except InvalidStatus as exc:
            raise TransportError(f"cannot reach {address}: the HTTP server answered "
                                 f"{exc.response.status_code} {_reason(exc)}"
                                 " (is the path right? is a p2phost node listening there?)"
                                 ) from exc
        except (InvalidURI, InvalidProxy) as exc:
            raise TransportError(f"cannot dial {address}: {exc}") from exc
        except (InvalidHandshake, WsClosed) as exc:
            raise TransportError(f"cannot reach {address}: the WebSocket upgrade failed: "
                                 f"{exc}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransportError(f"cannot reach {address}: {reason}") from exc
        if websocket.subprotocol != SUBPROTOCOL:
            with contextlib.suppress(Exception):
                await websocket.close()
            raise TransportError(f"cannot reach {address}: the server does not speak the "
                                 f"{SUBPROTOCOL!r} WebSocket subprotocol")
        local = _host_port(websocket.local_address)
        assert isinstance(websocket, CappedClientConnection)
        return WebSocketConnection(
            websocket, max_frame_size=self.max_frame_size,
            local_address=WsAddress(*local).url if local else "", remote_address=address)

    async def close(self) -> None:
        """Wait (briefly) for connections accepted by this transport's listeners to close."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.wait_closed(_CLOSE_TIMEOUT)


def _reason(exc: InvalidStatus) -> str:
    body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
    return f"({body})" if body else ""
