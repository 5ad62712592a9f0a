"""What a TCP connection asks of its socket: its addresses, its options, and the bytes
the kernel still holds for the peer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys

from p2phost_sdk import format_host_port

#: The ioctl that reads a TCP socket's unacknowledged send queue (Linux), and its answer.
if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
else:
    _OUTQ = None
_INT = struct.Struct("i")


def peer_address(writer: asyncio.StreamWriter, key: str) -> str:
    """The ``tcp://`` URL of the socket's ``sockname`` or ``peername`` ("" if none)."""
    name = writer.get_extra_info(key)
    return format_host_port(name[0], name[1], scheme="tcp") if isinstance(name, tuple) else ""


def tune(writer: asyncio.StreamWriter, *, nodelay: bool, buffer_size: int) -> None:
    """Set the transport's read size, Nagle's algorithm and the socket's buffer sizes."""
    if hasattr(writer.transport, "max_size"):
        writer.transport.max_size = 65536
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
            if buffer_size:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)


def kernel_unsent(sock: socket.socket | None) -> int:
    """Bytes in ``sock``'s send queue the peer has not acknowledged (``SIOCOUTQ``, Linux;
    0 where it cannot be read)."""
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            return int(_INT.unpack(fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4)))[0])
    return 0
