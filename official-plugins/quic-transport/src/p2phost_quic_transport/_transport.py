"""The QUIC transport: a UDP socket per listener, routing datagrams to connections.

Incoming connections are limited: at most ``max_pending`` (default :data:`MAX_PENDING`)
may be in their handshake at once (more Initial packets are dropped, as a full TCP
backlog would), and each must finish its handshake and open its stream within
``handshake_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
from typing import Any, cast

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from p2phost_sdk import (
    AcceptHandler,
    Connection,
    Listener,
    Transport,
    TransportError,
    format_host_port,
    parse_host_port,
)

from ._certificate import ephemeral_certificate
from ._connection import FIRST_CREDIT, QuicStreamConnection
from ._flow import CreditedQuic

#: The TLS ALPN protocol both ends name.
ALPN = "p2phost"
#: Incoming connections in their handshake at once, per listener, by default.
MAX_PENDING = 256


def parse_address(address: str) -> tuple[str, int]:
    """``quic://HOST:PORT`` as ``(host, port)``; AddressError says what is wrong."""
    return parse_host_port(address, scheme="quic")


def format_address(name: object) -> str:
    """The URL of a socket address ``(host, port, ...)`` ("" for anything else)."""
    if not isinstance(name, tuple) or len(name) < 2:
        return ""
    return format_host_port(str(name[0]), int(name[1]), scheme="quic")
# A client's first datagram is at least this long (RFC 9000 14.1): smaller ones that do
# not belong to a connection are not worth an answer.
_MIN_INITIAL = 1200
_CLOSE_TIMEOUT = 2.0


class QuicListener(asyncio.DatagramProtocol, Listener):
    """One UDP socket: new connections are accepted until :meth:`close`, and the socket
    stays open for the connections it carries until the last one ends."""

    def __init__(self, transport: QuicTransport, accept: AcceptHandler) -> None:
        self.addresses: list[str] = []
        self._owner = transport
        self._accept = accept
        self._udp: asyncio.DatagramTransport | None = None
        self._routes: dict[bytes, QuicStreamConnection] = {}
        self._connections: set[QuicStreamConnection] = set()
        self._pending: set[QuicStreamConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The UDP socket is open."""
        self._udp = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Route a datagram to its connection, or start a new one."""
        configuration = self._owner.server_configuration()
        try:
            header = pull_quic_header(Buffer(data=data),
                                      host_cid_length=configuration.connection_id_length)
        except ValueError:
            return
        udp = self._udp
        if udp is None:
            return
        if header.packet_type != QuicPacketType.VERSION_NEGOTIATION \
                and header.version is not None \
                and header.version not in configuration.supported_versions:
            udp.sendto(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=configuration.supported_versions), addr)
            return
        connection = self._routes.get(header.destination_cid)
        if connection is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < _MIN_INITIAL \
                    or not self._accepting or len(self._pending) >= self._owner.max_pending:
                return
            connection = self._new_connection(header.destination_cid, addr)
        connection.protocol.datagram_received(data, addr)

    def _new_connection(self, original_cid: bytes, addr: tuple[str, int]) -> QuicStreamConnection:
        owner = self._owner
        quic = CreditedQuic(configuration=owner.server_configuration(),
                            original_destination_connection_id=original_cid)
        connection = QuicStreamConnection(
            quic, max_frame_size=owner.max_frame_size, window=owner.window,
            remote_address=format_address(addr), local_address=self.addresses[0],
            on_ready=self._ready)
        assert self._udp is not None
        connection.protocol.connection_made(self._udp)
        connection.protocol.on_event = lambda event: self._event(connection, event)
        self._routes[original_cid] = self._routes[quic.host_cid] = connection
        self._connections.add(connection)
        self._pending.add(connection)
        loop = asyncio.get_running_loop()
        loop.call_later(owner.handshake_timeout, self._expire, connection)
        return connection

    def _event(self, connection: QuicStreamConnection, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionIdIssued):
            self._routes[event.connection_id] = connection
        elif isinstance(event, events.ConnectionIdRetired):
            self._routes.pop(event.connection_id, None)
        elif isinstance(event, events.ConnectionTerminated):
            for cid in [c for c, conn in self._routes.items() if conn is connection]:
                del self._routes[cid]
            self._connections.discard(connection)
            self._pending.discard(connection)
            self._close_when_idle()

    def _expire(self, connection: QuicStreamConnection) -> None:
        if connection in self._pending:
            connection.protocol.close(reason_phrase="handshake timeout")

    def _ready(self, connection: QuicStreamConnection) -> None:
        if connection not in self._pending:
            return
        self._pending.discard(connection)
        if not self._accepting:
            connection.protocol.close(reason_phrase="not accepting connections")
            return
        task = asyncio.ensure_future(self._accept(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_when_idle(self) -> None:
        if not self._accepting and not self._connections and self._udp is not None:
            self._udp.close()
            self._udp = None

    async def close(self) -> None:
        """Stop accepting; open connections belong to the node and stay open."""
        self._accepting = False
        for connection in list(self._pending):
            connection.protocol.close(reason_phrase="not accepting connections")
        self._close_when_idle()

    async def shut(self) -> None:
        """Close every connection still open and the socket (the transport is closing)."""
        await self.close()
        connections = list(self._connections)
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.wait_ended(_CLOSE_TIMEOUT) for c in connections))
        if self._udp is not None:
            self._udp.close()
            self._udp = None


class QuicTransport(Transport):
    """``quic://HOST:PORT``: listen and dial over QUIC (UDP)."""

    schemes = ("quic",)

    def __init__(
        self, *, max_frame_size: int = 16 * 1024 * 1024, window: int = 1024 * 1024,
        idle_timeout: float = 60.0, handshake_timeout: float = 10.0,
        max_datagram_size: int = 1200, congestion_control: str = "reno",
        max_pending: int = MAX_PENDING,
    ) -> None:
        if window < 65536:
            raise TransportError(f"window must be at least 65536 bytes, got {window}")
        if congestion_control not in ("reno", "cubic"):
            raise TransportError(f"congestion-control must be reno or cubic, got "
                                 f"{congestion_control!r}")
        self.max_frame_size = max_frame_size
        self.window = window
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_datagram_size = max_datagram_size
        self.congestion_control = congestion_control
        self.max_pending = max_pending
        self._server_configuration: QuicConfiguration | None = None
        self._listeners: list[QuicListener] = []

    def _configuration(self, *, is_client: bool) -> QuicConfiguration:
        return QuicConfiguration(
            is_client=is_client, alpn_protocols=[ALPN], idle_timeout=self.idle_timeout,
            # A peer's first credit is small (``FIRST_CREDIT``, on all streams together):
            # it grows as the node reads (``QuicStreamConnection._grant``), so a peer
            # not through the host's handshake cannot make the node hold a window.
            max_datagram_size=self.max_datagram_size, max_stream_data=FIRST_CREDIT,
            max_data=FIRST_CREDIT, congestion_control_algorithm=self.congestion_control,
            # Not for identity: the security plugin proves who the peer is (see README).
            verify_mode=ssl.CERT_NONE,
        )

    def server_configuration(self) -> QuicConfiguration:
        """The listeners' configuration, with this transport's throwaway certificate."""
        if self._server_configuration is None:
            certificate: x509.Certificate
            key: ec.EllipticCurvePrivateKey
            certificate, key = ephemeral_certificate()
            configuration = self._configuration(is_client=False)
            configuration.certificate, configuration.private_key = certificate, key
            self._server_configuration = configuration
        return self._server_configuration

    def check_address(self, address: str) -> None:
        """AddressError unless ``address`` is ``quic://HOST:PORT``."""
        parse_address(address)

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Listen on ``address``; port 0 picks a free port (see ``Listener.addresses``)."""
        host, port = parse_address(address)
        self.server_configuration()
        listener = QuicListener(self, accept)
        loop = asyncio.get_running_loop()
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: listener, local_addr=(host, port))
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "address already in use" if in_use else (exc.strerror or str(exc))
            raise TransportError(f"cannot listen on {address}: {reason}") from exc
        listener.addresses = [format_address(udp.get_extra_info("sockname"))]
        self._listeners.append(listener)
        return listener

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Connect to ``address`` within ``timeout`` seconds."""
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        connection: QuicStreamConnection | None = None
        try:
            async with asyncio.timeout(timeout):
                family, remote = await _resolve(host, port)
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    # Connected, so the kernel reports "port unreachable" to this socket.
                    sock.connect(remote)
                    # What the kernel made of it (0.0.0.0 is this host): replies come from there.
                    remote = sock.getpeername()
                    configuration = self._configuration(is_client=True)
                    configuration.server_name = host
                    connection = QuicStreamConnection(
                        CreditedQuic(configuration=configuration),
                        max_frame_size=self.max_frame_size, window=self.window,
                        remote_address=address,
                        local_address=format_address(sock.getsockname()))
                    made = connection
                    udp, _ = await loop.create_datagram_endpoint(lambda: made.protocol, sock=sock)
                except BaseException:
                    sock.close()
                    raise
                connection.udp = udp
                connection.protocol.connect(remote)
                await connection.connected(timeout)
        except TimeoutError:
            await _abandon(connection)
            raise TransportError(f"cannot reach {address}: no answer within {timeout:g}s") from None
        except ConnectionRefusedError as exc:
            await _abandon(connection)
            raise TransportError(f"cannot reach {address}: connection refused (nothing "
                                 "listens there)") from exc
        except (OSError, TransportError) as exc:
            await _abandon(connection)
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) \
                or type(exc).__name__
            raise TransportError(f"cannot reach {address}: {reason}") from exc
        except BaseException:
            await _abandon(connection)
            raise
        connection.open_stream()
        return connection

    async def close(self) -> None:
        """Close every listener's socket and the connections still on them."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.shut()


async def _resolve(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """The address family and socket address of ``host:port`` (no DNS for an IP)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return infos[0][0], infos[0][4]
    if ip.version == 4:
        return socket.AF_INET, (host, port)
    return socket.AF_INET6, (host, port, 0, 0)


async def _abandon(connection: QuicStreamConnection | None) -> None:
    if connection is not None:
        connection.protocol.close()
        if connection.udp is not None:
            with contextlib.suppress(Exception):
                connection.udp.close()
