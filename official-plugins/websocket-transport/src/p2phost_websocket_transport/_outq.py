"""The bytes the kernel still holds for the peer in a socket's send queue.

A copy of tcp-transport's ``kernel_unsent`` (``_sockets.py``): plugins import only
p2phost_sdk, never each other, and the SDK has no such helper.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    #: The ioctl that reads a TCP socket's unacknowledged send queue (``SIOCOUTQ``).
    _OUTQ: int | None = termios.TIOCOUTQ
else:
    _OUTQ = None
_INT = struct.Struct("i")


def kernel_unsent(sock: socket.socket | None) -> int:
    """Bytes in ``sock``'s send queue the peer has not acknowledged (Linux; 0 where it
    cannot be read)."""
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            return int(_INT.unpack(fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4)))[0])
    return 0
