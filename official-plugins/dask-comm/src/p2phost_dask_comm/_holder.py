"""The p2phost node of a Dask process: opened when its first comm or listener needs it,
closed a moment after its last one is gone. One per event loop (a Dask client in a
thread of its own runs its own loop, and so its own node).
"""

from __future__ import annotations

import asyncio
import weakref

from ._app import DaskCommApp
from ._errors import PeerNotReached
from ._node import OpenNode, open_dask_node

#: Seconds the node stays open after its last comm closed: Dask closes and reopens
#: comms often, and a node's start (discovery, handshakes) costs far more than that.
LINGER = 2.0


class NodeHolder:
    """Counts the comms and listeners using the loop's node; opens and closes it."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, NodeHolder] = \
        weakref.WeakKeyDictionary()

    @classmethod
    def current(cls) -> NodeHolder:
        """The holder of the running loop's node."""
        loop = asyncio.get_running_loop()
        holder = cls._by_loop.get(loop)
        if holder is None:
            holder = cls._by_loop[loop] = cls()
        return holder

    def __init__(self) -> None:
        self._users = 0
        self._open: OpenNode | None = None
        self._lock = asyncio.Lock()
        self._linger: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def app(self) -> DaskCommApp | None:
        """The node's dask-comm app, while the node is open."""
        return None if self._open is None else self._open.app

    @property
    def peer_id(self) -> str:
        """The node's peer id (the node is open)."""
        assert self._open is not None, "acquire() the node first"
        return self._open.peer_id

    async def acquire(self) -> DaskCommApp:
        """Count one more user and open the node if it is not open; its app."""
        self.hold()
        try:
            async with self._lock:
                if self._closing is not None:
                    await self._closing
                if self._open is None:
                    self._open = await open_dask_node()
                return self._open.app
        except BaseException:
            self.release()
            raise

    def hold(self) -> None:
        """Count one more user of the open node."""
        self._users += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def release(self) -> None:
        """Count one user less; the last one leaves the node open for ``LINGER`` s."""
        self._users -= 1
        if self._users <= 0 and self._open is not None and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._close_now)

    def _close_now(self) -> None:
        self._linger = None
        if self._users <= 0 and self._open is not None and self._closing is None:
            opened, self._open = self._open, None
            self._closing = asyncio.get_running_loop().create_task(
                self._close(opened), name="dask-comm: closing the p2phost node")

    async def _close(self, opened: OpenNode) -> None:
        try:
            await opened.close()
        finally:
            self._closing = None

    async def wait_connected(self, peer: str) -> None:
        """Wait until the node is connected to ``peer`` (discovery dials it); Dask's
        ``connect`` bounds the wait and retries."""
        app = self.app
        if app is None:
            raise PeerNotReached("the p2phost node is not open")
        if peer != app.node.peer_id:
            await app.wait_connected(peer)

    async def aclose(self) -> None:
        """Close the node now (tests and benchmarks that end their loop)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._closing is not None:
            await self._closing
        if self._open is not None:
            opened, self._open = self._open, None
            await opened.close()
