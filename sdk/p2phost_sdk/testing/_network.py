"""An in-process transport for kits: ``mem://NAME`` listeners of one :class:`MemoryNetwork`.

Unlike the memory-transport plugin (one registry per process), each network is its own
namespace, so tests running side by side never see each other's nodes.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from .._errors import TransportError
from .._transport import AcceptHandler, Connection, Listener, Transport
from ._memory import memory_pipe


class _NetworkListener(Listener):
    def __init__(self, network: MemoryNetwork, name: str, accept: AcceptHandler) -> None:
        self.network, self.name, self.accept = network, name, accept
        self.addresses = [f"mem://{name}"]
        # The listener owns the accept handlers it starts: close cancels and awaits them.
        self.tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        if self.network.listeners.get(self.name) is self:
            del self.network.listeners[self.name]
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class MemoryNetwork(Transport):
    """``mem://NAME`` within this network object: connections are :func:`memory_pipe` s."""

    schemes = ("mem",)

    def __init__(self, *, max_frame_size: int = 16 * 1024 * 1024) -> None:
        self.max_frame_size = max_frame_size
        self.listeners: dict[str, _NetworkListener] = {}

    @staticmethod
    def _name(address: str) -> str:
        parts = urlsplit(address)
        if parts.scheme != "mem" or not parts.netloc:
            raise TransportError(f"bad address {address!r}: expected mem://NAME")
        return parts.netloc

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Register ``mem://NAME`` in this network."""
        name = self._name(address)
        if name in self.listeners:
            raise TransportError(f"cannot listen on {address}: address already in use")
        listener = _NetworkListener(self, name, accept)
        self.listeners[name] = listener
        return listener

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Connect to the listener of ``address`` in this network."""
        listener = self.listeners.get(self._name(address))
        if listener is None:
            raise TransportError(f"cannot reach {address}: nothing listens there")
        mine, theirs = memory_pipe(max_frame_size=self.max_frame_size, name=listener.name)

        async def accept() -> None:
            await listener.accept(theirs)

        task = asyncio.get_running_loop().create_task(accept())
        listener.tasks.add(task)
        task.add_done_callback(listener.tasks.discard)
        return mine
