"""The host's cap on incoming frames (``Connection.limit_incoming``) over websockets.

websockets parses frames as bytes arrive and checks a message's size only against
``max_size``, once, when its header arrives: a peer that announces a 16 MiB message
before the handshake is done would make the node buffer all of it before anything
could refuse it. Here the payload of the frame being read is checked against the
host's cap each time more of it arrives:

- while the node waits for a frame (in ``recv``) and nothing parsed is waiting for it,
  a frame over the cap is refused there and then: websockets closes the connection with
  1009 (message too big), having buffered no more than the cap and one read;
- otherwise the node may still lift the cap before it asks for that frame (the peer may
  send a large message as soon as it has this node's hello), so reading stops until it
  asks (``taking``), and the frame is judged against the cap then, as over TCP.

A whole message over the cap that arrived in one read is refused when it is taken.

The same counts tell the keepalive how much of a message has arrived so far
(:meth:`CappedWebSocket.partly_received`).

This reaches into websockets' sans-I/O layer (``Protocol.reader``, ``events``,
``parser_exc``, ``current_size``); the plugin pins ``websockets<18`` and its tests check
the cap, so a change there is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection as WebSocket
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol
from websockets.streams import StreamReader
from websockets.version import version

#: The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
_MOST_HEADER = 14
#: The opcodes of a message's frames (not control frames: a ping is no message).
_DATA = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})
#: The protocol's count of a message's fragments parsed so far: websockets 16.0 renamed
#: ``cur_size`` (which 15, in the pinned range, still has) to ``current_size``.
_SIZE = "cur_size" if int(version.split(".")[0]) < 16 else "current_size"


def _fragments_size(protocol: Protocol) -> int:
    """Payload bytes of the message's fragments parsed so far (0 between messages)."""
    size: int | None = getattr(protocol, _SIZE)
    return size or 0


def _message_parsed(events: list[Any]) -> bool:
    """Whether ``events`` (parsed, not yet handed on) end a message: it reaches the
    node, which may lift the cap for what follows. Fragments of the message over the cap
    do not (holding on them, with the node waiting in ``recv``, would wait forever)."""
    return any(isinstance(event, Frame) and event.fin and event.opcode in _DATA
               for event in events)


class CappedWebSocket(WebSocket):
    """A websockets connection whose frame in assembly is held to :attr:`cap`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cap: int | None = None
        #: The node is in ``recv``: a frame over the cap now is judged at once.
        self.taking = False
        #: Reading stopped on a frame over the cap, until the node asks for a frame.
        self.held = False
        self._cut: asyncio.TimerHandle | None = None
        # Checked from the start (nothing has been parsed yet at this point).
        self.cap = None

    @property
    def cap(self) -> int | None:
        """The host's cap on incoming frames, None when only ``max_size`` applies."""
        return self._cap

    @cap.setter
    def cap(self, cap: int | None) -> None:
        self._cap = cap
        # The parser fetches ``read_exact`` for each frame: while there is a cap, every
        # read goes through the check below; once it is lifted (after the security
        # handshake), through websockets' own again, with no generator more per read.
        reader = self.protocol.reader
        if cap is not None:
            reader.read_exact = self._read_exact  # type: ignore[method-assign]
        else:
            # (Not through ``vars``: reading a dict of an object's makes CPython 3.11
            # read all of its attributes the slow way for its life.)
            with contextlib.suppress(AttributeError):  # not patched
                del reader.read_exact

    def data_received(self, data: bytes) -> None:
        """Feed ``data`` to websockets; after a refused frame, cut a peer that does not
        close within ``close_timeout``."""
        super().data_received(data)
        if self.protocol.parser_exc is not None and self._cut is None:
            # websockets sent its close frame (1009 for a frame too large) and waits for
            # the peer to close: one that never does would hold the socket until the
            # node's own timeout, with the node waiting in ``recv``.
            self._cut = self.loop.call_later(self.close_timeout or 0.0, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed: no need to cut it any more."""
        if self._cut is not None:
            self._cut.cancel()
        super().connection_lost(exc)

    def _read_exact(self, n: int) -> Generator[None, None, bytearray]:
        protocol = self.protocol
        reader = protocol.reader
        while True:
            cap, before = self.cap, _fragments_size(protocol)
            # ``n`` may be a frame's header (2 to 14 bytes: read_exact serves the parser
            # for both): a message at the cap, ended by an empty fragment (as websockets
            # sends one in pieces), is no more than the cap. A payload that passes the
            # cap by no more than a header is caught whole, when it is taken.
            over = cap is not None and (before > cap or before + n > cap + _MOST_HEADER)
            if cap is not None and over and self.taking \
                    and not _message_parsed(protocol.events):
                raise PayloadTooBig(n, cap - before)
            if over:
                # Read no more until the node asks, even when this piece is here
                # already: a message in many small fragments, each arriving whole,
                # would otherwise be read on to max_size behind the cap.
                self.held = True
                self.transport.pause_reading()
            if len(reader.buffer) >= n or reader.eof:
                return (yield from StreamReader.read_exact(reader, n))
            yield

    def partly_received(self) -> int:
        """Bytes of the message under way: its fragments parsed so far, and what arrived
        of the rest (the reader holds a frame's payload until all of it is here)."""
        protocol = self.protocol
        return _fragments_size(protocol) + len(protocol.reader.buffer)

    def take(self) -> None:
        """The node asks for a frame: read again if a frame over the cap stopped it."""
        self.taking = True
        if self.held:
            self.held = False
            if not self.recv_messages.paused:  # (else websockets resumes it itself)
                self.transport.resume_reading()


class CappedServerConnection(CappedWebSocket, ServerConnection):
    """An accepted WebSocket that honours the host's cap on incoming frames."""


class CappedClientConnection(CappedWebSocket, ClientConnection):
    """A dialled WebSocket that honours the host's cap on incoming frames."""
