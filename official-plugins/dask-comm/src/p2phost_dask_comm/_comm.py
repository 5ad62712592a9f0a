"""Dask's ``Comm``, ``Listener`` and ``Connector`` over p2phost streams.

Messages go through Dask's own serialization (``to_frames``/``from_frames``, as
``distributed.comm.tcp`` does); the stream carries the frames as they are.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.comm.core import BaseListener, Comm, CommClosedError, Connector
from distributed.comm.utils import from_frames, to_frames
from distributed.utils import ensure_memoryview

from p2phost_sdk import ConnectionClosed

from ._address import Address, is_loopback
from ._holder import NodeHolder
from ._streams import Stream

log = logging.getLogger("p2phost.plugin.dask-comm")


class P2PHostComm(Comm):
    """One Dask comm: a stream of whole Dask messages to one peer."""

    def __init__(self, stream: Stream, holder: NodeHolder, local: str, remote: str,
                 deserialize: bool = True) -> None:
        super().__init__(deserialize=deserialize)
        self._stream, self._holder = stream, holder
        self._local_addr, self._peer_addr = local, remote
        self._released = False

    @property
    def local_address(self) -> str:
        """``p2phost://`` and this node's peer id (and listener name, when accepted)."""
        return self._local_addr

    @property
    def peer_address(self) -> str:
        """``p2phost://`` and the peer's id (and listener name, when dialled)."""
        return self._peer_addr

    @property
    def same_host(self) -> bool:
        """Whether the p2phost connection to the peer is on loopback (then Dask does
        not compress, as on a local TCP comm)."""
        app = self._holder.app
        return app is not None and is_loopback(app.address_of(self._stream.peer))

    @property
    def extra_info(self) -> dict[str, Any]:
        """The peer id and the transport address carrying this comm."""
        app = self._holder.app
        return {"peer_id": self._stream.peer,
                "via": app.address_of(self._stream.peer) if app else ""}

    async def read(self, deserializers: Any = None) -> Any:
        """The next message, deserialized by Dask."""
        try:
            frames = await self._stream.read()
        except ConnectionClosed as exc:
            self._release()
            raise CommClosedError(f"in {self!r}: {exc}") from None
        try:
            return await from_frames(  # type: ignore[no-untyped-call]
                frames, deserialize=self.deserialize, deserializers=deserializers,
                allow_offload=self.allow_offload)
        except EOFError:
            self.abort()
            raise CommClosedError("aborted stream on truncated data") from None

    async def write(self, msg: Any, serializers: Any = None, on_error: str = "message") -> int:
        """Send ``msg``, serialized by Dask; the bytes written."""
        if self._stream.closed():
            raise CommClosedError(f"in {self!r}: closed")
        frames = await to_frames(  # type: ignore[no-untyped-call]
            msg, allow_offload=self.allow_offload, serializers=serializers,
            on_error=on_error,
            context={"sender": self.local_info, "recipient": self.remote_info,
                     **self.handshake_options})
        try:
            return await self._stream.write([ensure_memoryview(f) for f in frames])
        except ConnectionClosed as exc:
            self._release()
            raise CommClosedError(f"in {self!r}: {exc}") from None

    async def close(self) -> None:
        """Close the comm (the peer reads to the end of what was sent, then it ends)."""
        self.abort()

    def abort(self) -> None:
        """Close the comm at once."""
        self._stream.close()
        self._release()

    def closed(self) -> bool:
        """Whether the comm is closed."""
        return self._stream.closed()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._holder.release()


class P2PHostListener(BaseListener):
    """Accepts Dask comms that peers open to this node (``p2phost://PEERID[/NAME]``)."""

    prefix = "p2phost://"  # Dask's worker prints its address with it

    def __init__(self, loc: str, handle_comm: Any, deserialize: bool = True,
                 allow_offload: bool = True, **connection_args: Any) -> None:
        super().__init__()
        self._wanted = Address.listening(loc)
        self._handle_comm = handle_comm
        self._deserialize, self._allow_offload = deserialize, allow_offload
        self._holder: NodeHolder | None = None  # the running loop's, once started
        self._name: str | None = None
        self._address = ""

    async def start(self) -> None:
        """Open this process's node (if not open yet) and serve a listener name on it."""
        holder = self._holder = NodeHolder.current()
        app = await holder.acquire()
        try:
            own = holder.peer_id
            if self._wanted.peer and self._wanted.peer != own:
                raise OSError(f"cannot listen on {self._wanted}: this process's p2phost "
                              f"node is {own}")
            self._name = app.add_listener(self._wanted.name, self._accept)
        except BaseException:
            holder.release()
            raise
        self._address = str(Address(own, self._name))

    def _accept(self, stream: Stream) -> None:
        holder = self._holder
        assert holder is not None and holder.app is not None
        app = holder.app
        holder.hold()
        comm = P2PHostComm(stream, holder, self._address,
                           str(Address(stream.peer, "")), self._deserialize)
        comm.allow_offload = self._allow_offload
        app.spawn(self._serve(comm), f"dask comm {stream.sid} from {stream.peer[:12]}")

    async def _serve(self, comm: P2PHostComm) -> None:
        try:
            await self.on_connection(comm)
        except CommClosedError:
            log.debug("comm from %s closed before Dask's handshake completed",
                      comm.peer_address)
            return
        await self._handle_comm(comm)

    def stop(self) -> None:
        """Stop accepting (open comms stay open)."""
        holder = self._holder
        if self._name is not None and holder is not None and holder.app is not None:
            holder.app.remove_listener(self._name)
            self._name = None
            holder.release()

    @property
    def listen_address(self) -> str:
        """``p2phost://PEERID`` (``/NAME`` for a second listener of this process)."""
        if not self._address:
            raise ValueError("invalid operation on a p2phost listener that did not start")
        return self._address

    @property
    def contact_address(self) -> str:
        """Where peers reach it: the same as ``listen_address``."""
        return self.listen_address


class P2PHostConnector(Connector):
    """Opens Dask comms to ``p2phost://PEERID[/NAME]`` over this process's node."""

    async def connect(self, address: str, deserialize: bool = True,
                      **connection_args: Any) -> P2PHostComm:
        """Wait until discovery connected the peer, then open a stream to its listener."""
        target = Address.parse(address)
        holder = NodeHolder.current()
        app = await holder.acquire()
        try:
            await holder.wait_connected(target.peer)
            stream = await app.open(target.peer, target.name)
        except BaseException:
            holder.release()
            raise
        comm = P2PHostComm(stream, holder, str(Address(holder.peer_id, "")), str(target),
                           deserialize)
        return comm

