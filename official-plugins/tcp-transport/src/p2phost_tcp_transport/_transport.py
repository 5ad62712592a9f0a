"""TCP as a transport: listen on and dial ``tcp://HOST:PORT``.

The frames themselves (length-prefixed, read and written in batches, large ones in
place, push mode) are :class:`~._connection.TcpConnection`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno

from p2phost_sdk import (
    AcceptHandler,
    Connection,
    Listener,
    Transport,
    TransportError,
    format_host_port,
    parse_host_port,
)

from ._connection import CLOSE_TIMEOUT, TcpConnection
from ._direct import open_direct, serve_direct


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` as ``(host, port)``; AddressError says what is wrong."""
    return parse_host_port(address, scheme="tcp")


class TcpListener(Listener):
    """A listening TCP socket (or one per address family for a wildcard host)."""

    def __init__(self, server: asyncio.Server, addresses: list[str]) -> None:
        self._server = server
        self.addresses = addresses

    async def close(self) -> None:
        """Stop accepting; open connections belong to the node and stay open."""
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._server.wait_closed()


class TcpTransport(Transport):
    """``tcp://HOST:PORT``: listen and dial over TCP."""

    schemes = ("tcp",)

    def __init__(
        self, *, max_frame_size: int = 16 * 1024 * 1024, nodelay: bool = True,
        read_size: int = 262144, buffer_size: int = 0,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.nodelay = nodelay
        self.read_size = read_size
        self.buffer_size = buffer_size

    def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: str = ""
    ) -> TcpConnection:
        return TcpConnection(
            reader, writer, max_frame_size=self.max_frame_size, read_size=self.read_size,
            nodelay=self.nodelay, buffer_size=self.buffer_size, local_address=local,
        )

    def check_address(self, address: str) -> None:
        """AddressError unless ``address`` is ``tcp://HOST:PORT``."""
        parse_address(address)

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Listen on ``address``; port 0 picks a free port (see ``Listener.addresses``)."""
        host, port = parse_address(address)
        listen_address = address

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accept(self._connection(reader, writer, listen_address))

        try:
            server = await serve_direct(on_client, host, port, self.read_size)
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "address already in use" if in_use else (exc.strerror or str(exc))
            raise TransportError(f"cannot listen on {address}: {reason}") from exc
        addresses = []
        for sock in server.sockets:
            name = sock.getsockname()
            addresses.append(format_host_port(name[0], name[1], scheme="tcp"))
        listen_address = addresses[0]
        return TcpListener(server, addresses)

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Connect to ``address`` within ``timeout`` seconds."""
        host, port = parse_address(address)
        try:
            async with asyncio.timeout(timeout):
                reader, writer, _ = await open_direct(host, port, self.read_size)
        except TimeoutError:
            raise TransportError(f"cannot reach {address}: no answer within {timeout:g}s") from None
        except ConnectionRefusedError as exc:
            raise TransportError(f"cannot reach {address}: connection refused (nothing "
                                 "listens there)") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransportError(f"cannot reach {address}: {reason}") from exc
        return self._connection(reader, writer)
