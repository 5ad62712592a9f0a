"""The memory transport between nodes on two event loops in two threads (as the library's
blocking nodes run): the listener's side of a connection is served on the listener's
loop, and frames cross in both directions. It was served on the dialler's loop: the
listening node's tasks, futures and SQLite connections were then used from the wrong
thread ("Event loop is closed" at close, "SQLite objects created in a thread can only
be used in that same thread")."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from typing import Any

from p2phost_sdk import Connection
from tests.discovery.plugins import use_plugin_source

use_plugin_source("memory-transport")

from p2phost_memory_transport import MemoryTransport  # noqa: E402


class LoopThread:
    """An event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_dial_from_another_loop_is_served_on_the_listeners_loop() -> None:
    server, client = LoopThread(), LoopThread()
    address = f"mem://loops-{uuid.uuid4().hex[:12]}"
    accepted: list[tuple[Connection, threading.Thread]] = []
    served = threading.Event()

    async def accept(connection: Connection) -> None:
        accepted.append((connection, threading.current_thread()))
        served.set()

    transport = MemoryTransport(capacity=2)
    try:
        listener = server.run(transport.listen(address, accept))
        dialled = client.run(MemoryTransport(capacity=2).dial(address, timeout=5))
        assert served.wait(10)
        (server_end, thread), = accepted
        assert thread is server.thread  # not the dialler's
        # Both ways, past the pipes' capacity: readers and writers wake across threads.
        async def send_all(end: Connection, frames: list[bytes]) -> None:
            for frame in frames:
                await end.send(frame)

        async def receive(end: Connection, count: int) -> list[bytes]:
            return [await end.recv() for _ in range(count)]

        frames = [b"%d" % n for n in range(50)]
        sending = asyncio.run_coroutine_threadsafe(send_all(dialled, frames), client.loop)
        assert server.run(receive(server_end, 50)) == frames
        sending.result(10)
        sending = asyncio.run_coroutine_threadsafe(send_all(server_end, frames), server.loop)
        assert client.run(receive(dialled, 50)) == frames
        sending.result(10)
        client.run(dialled.close())
        server.run(server_end.close())
        server.run(listener.close())
    finally:
        client.stop()
        server.stop()
