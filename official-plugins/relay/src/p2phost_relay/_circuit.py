"""One end of a relayed circuit, as a :class:`~p2phost_sdk.Connection` the host handshakes.

Frames go out as ``data`` messages to the relay (base64 in the codec's body) and come in
from the relay app's handler through :meth:`Circuit.feed`. What the relay carries is
whatever the host writes on the connection: its security plugin's handshake and then
ciphertext, so the relay never sees a message in clear when both ends run one.

Flow control (when the relay and both ends speak it, docs/wire.md section 7): each end
grants the other a *window*, the bytes of frames it may send that this end has not read
yet, as a running total (``credit`` messages: "you may send up to byte N"). A sender that
used its window waits in :meth:`Circuit.send`, so the host stops writing that connection,
and the app sending on it waits, as over TCP; the reader grants more as it reads. So a
fast sender never has more in flight than the relay and the reader buffer, its circuit
is not closed for it, and no other circuit waits: the relay's and the reader's buffers
never fill.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    Messenger,
    check_frame_size,
)

#: Seconds between a client's pulls: after frames, and at most while idle.
PULL_MIN, PULL_MAX = 0.005, 0.2
#: Sends one relay-topic body to the relay (the node's ``send`` to the relay peer).
Post = Callable[[dict[str, Any]], Awaitable[None]]


class Circuit(Connection):
    """A connection to a peer through a relay, named by ``(relay peer, circuit id)``."""

    def __init__(self, relay_peer: str, circuit_id: str, post: Post, *,
                 local_address: str, remote_address: str, remote_peer_id: str | None,
                 max_frame_size: int, buffer_bytes: int, timeout: float,
                 on_close: Callable[[Circuit], None],
                 grant: Callable[[int], None] = lambda limit: None,
                 counters: Counter[str] | None = None) -> None:
        self.relay_peer = relay_peer
        self.circuit_id = circuit_id
        self.local_address = local_address
        self.remote_address = remote_address
        self.remote_peer_id = remote_peer_id
        #: Below the node's own: a frame crosses each hop as base64 in one message.
        self.max_frame_size = max_frame_size
        self._post = post
        self._max_frame = max_frame_size
        self._incoming_limit = max_frame_size
        self._buffer_bytes = buffer_bytes
        self._timeout = timeout
        self._on_close = on_close
        self._frames: deque[bytes] = deque()
        self._buffered = 0
        self._changed = asyncio.Event()
        #: Why the circuit ended (None while open).
        self.ended: str | None = None
        #: Where the other end offered to be dialled directly (an accepted circuit).
        self.upgrade_to: list[str] = []
        #: Set on each frame sent: a client's pull loop asks again soon (a reply is due).
        self.wrote = asyncio.Event()
        #: Frames and bytes carried, for counters.
        self.frames_in = self.frames_out = 0
        # Flow control (off until :meth:`flow_control`): what we read and granted, what
        # we sent and may send (None: the other end grants nothing, so no limit).
        self._grant, self._counters = grant, counters if counters is not None else Counter()
        self._window: int | None = None
        self._granting = False
        self._read = self._granted = 0
        self._sent = 0
        self._send_limit: int | None = None
        self._credit = asyncio.Event()

    # -- the host's side -----------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        """Forward one frame to the relay; ConnectionClosed once the circuit ended."""
        if self.ended is not None:
            raise ConnectionClosed(f"relayed circuit closed: {self.ended}")
        check_frame_size(frame, self._max_frame)
        if self._send_limit is not None and self._sent >= self._send_limit:
            await self._wait_for_credit()
        try:
            async with asyncio.timeout(self._timeout):
                await self._post({"op": "data", "circuit": self.circuit_id,
                                  "data": base64.b64encode(frame).decode()})
        except (TimeoutError, ConnectionError, OSError) as exc:
            self.end(f"the relay did not take a frame: {exc or 'timed out'}")
            raise ConnectionClosed(f"relayed circuit closed: {self.ended}") from exc
        except FrameTooLarge as exc:
            # Over the max-frame-size the relay announced: the frame never left, but the
            # stream is broken without it (its security plugin would see one missing), so
            # the circuit closes at both ends, saying why.
            await self._fail(f"a frame of {len(frame)} bytes is too large for the relay: {exc}")
            raise ConnectionClosed(f"relayed circuit closed: {self.ended}") from exc
        except Exception as exc:  # PeerUnavailable: the connection to the relay is gone
            self.end(f"the relay is gone: {exc}")
            raise ConnectionClosed(f"relayed circuit closed: {self.ended}") from exc
        self.frames_out += 1
        self._sent += len(frame)
        self.wrote.set()

    async def _wait_for_credit(self) -> None:
        # No timeout of its own: the host bounds every write of a connection (a peer
        # that takes nothing for keepalive-timeout is disconnected), and closing the
        # connection ends this wait.
        self._counters["credit waits"] += 1
        while (self._send_limit is not None and self._sent >= self._send_limit
               and self.ended is None):
            self._credit.clear()
            await self._credit.wait()
        if self.ended is not None:
            raise ConnectionClosed(f"relayed circuit closed: {self.ended}")

    def limit_incoming(self, size: int | None) -> None:
        """Refuse incoming frames over ``size`` (the host's cap before the handshake)."""
        self._incoming_limit = self._max_frame if size is None else size

    async def recv(self) -> bytes:
        """The next frame from the other end; ConnectionClosed once the circuit ended."""
        while not self._frames:
            if self.ended is not None:
                raise ConnectionClosed(f"relayed circuit closed: {self.ended}")
            self._changed.clear()
            await self._changed.wait()
        frame = self._frames[0]
        if len(frame) > self._incoming_limit:
            # Checked when taken, not when it came: the handshake lifts its cap after
            # taking the hello, and the peer may send a large message right behind it.
            await self._fail(f"a frame of {len(frame)} bytes is over the limit of "
                             f"{self._incoming_limit} accepted before the handshake is done")
            raise ConnectionClosed(f"relayed circuit closed: {self.ended}")
        self._frames.popleft()
        self._buffered -= len(frame)
        self._changed.set()  # room for a waiting feed
        self._read += len(frame)
        window = self._window
        if self._granting and window is not None \
                and self._read + window - self._granted >= window // 2:
            self._give_credit()
        return frame

    # -- flow control --------------------------------------------------------------------

    def flow_control(self, window: int, *, grant_now: bool) -> None:
        """Grant the other end ``window`` bytes beyond what this end has read, from now
        (``grant_now``: the target, told that the dialler speaks it) or once the other end
        granted us some (the dialler, which cannot know whether the target speaks it)."""
        self._window = max(1, window)
        if grant_now:
            self._granting = True
            self._give_credit()

    def credit(self, limit: int) -> None:
        """The other end grants sending up to ``limit`` bytes in all (a ``credit``)."""
        if self._send_limit is None or limit > self._send_limit:
            self._send_limit = limit
            self._credit.set()
        if not self._granting and self._window is not None:
            self._granting = True  # it speaks flow control: grant it ours
            self._give_credit()

    def _give_credit(self) -> None:
        assert self._window is not None
        limit = self._read + self._window
        if limit > self._granted and self.ended is None:
            self._granted = limit
            self._grant(limit)

    async def close(self) -> None:
        """Close both ends: the relay is told, and tells the other end. Idempotent."""
        if self.ended is not None:
            return
        self.end("closed by this end")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(self._timeout, 2.0)):
                await self._post({"op": "close", "circuit": self.circuit_id,
                                  "reason": "closed by the other end"})

    # -- the relay app's side ------------------------------------------------------------

    async def feed(self, data: str) -> None:
        """A ``data`` message from the relay: queue its frame for :meth:`recv`.

        Waits while ``buffer_bytes`` are unread (which slows the relay, and so the
        sender); a reader that stays behind for ``timeout`` ends the circuit, as does a
        frame over the incoming limit or data that is not base64.
        """
        if self.ended is not None:
            return
        try:
            frame = base64.b64decode(data, validate=True)
        except ValueError:
            await self._fail("the relay sent data that is not base64")
            return
        # Over the handshake's cap, a frame is kept only behind one still queued (a large
        # message right behind the hello, as tcp-transport holds it); recv checks the cap
        # again when it is taken.
        limit = self._max_frame if self._frames else self._incoming_limit
        if len(frame) > limit:
            await self._fail(f"a frame of {len(frame)} bytes is over the limit of {limit}")
            return
        try:
            async with asyncio.timeout(self._timeout):
                while self._buffered >= self._buffer_bytes and self.ended is None:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            await self._fail(f"the reader left {self._buffered} bytes unread for "
                             f"{self._timeout:g}s")
            return
        self._frames.append(frame)
        self._buffered += len(frame)
        self.frames_in += 1
        self._changed.set()

    def end(self, reason: str) -> None:
        """The circuit is over (either end, or the relay, said so): wake the reader."""
        if self.ended is None:
            self.ended = reason
            self._changed.set()
            self._credit.set()
            self._on_close(self)

    async def _fail(self, reason: str) -> None:
        self.end(reason)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(self._timeout, 2.0)):
                await self._post({"op": "close", "circuit": self.circuit_id,
                                  "reason": reason})


async def pull_frames(node: Messenger, relay: str, circuit: Circuit, timeout: float) -> None:
    """Feed ``circuit`` with the frames its relay keeps for it, asked for with ``pull``
    requests (a client node is sent only replies), until the circuit ends."""
    idle = PULL_MIN
    while circuit.ended is None:
        try:
            answer = await node.request(relay, "relay", {"op": "pull",
                                                         "circuit": circuit.circuit_id},
                                        timeout=timeout)
        except Exception as exc:  # the relay is gone or refuses
            circuit.end(f"the relay did not answer a pull: {exc}")
            return
        frames = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(frames, list):
            circuit.end("the relay answered a pull with something else")
            return
        for data in frames:
            if isinstance(data, str):
                await circuit.feed(data)
        if isinstance(answer.get("closed"), str):
            circuit.end(f"closed by the relay: {answer['closed'][:200]}")
            return
        # Soon again after frames in either direction (a reply is likely coming), slower
        # while idle.
        idle = PULL_MIN if frames or circuit.wrote.is_set() else min(idle * 2, PULL_MAX)
        circuit.wrote.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(idle):
                await circuit.wrote.wait()
