"""tcp-transport's large frames: written without a joined copy, read into one buffer
(on asyncio's loop straight from the socket), whole and in order between small ones;
a large frame cut short by a close is a truncated frame, not a clean end."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from p2phost_sdk import Connection, TransportError
from tests.discovery.plugins import use_plugin_source

use_plugin_source("tcp-transport")

from p2phost_tcp_transport import TcpTransport  # noqa: E402

BIG = bytes(range(256)) * 20_000  # 5 MB


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    (uvloop.run if loop == "uvloop" else asyncio.run)(asyncio.wait_for(main(), 30))


async def pair() -> tuple[Connection, Connection]:
    transport = TcpTransport(max_frame_size=8 << 20)
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    listener = await transport.listen("tcp://127.0.0.1:0", accepted.put)
    dialled = await transport.dial(listener.addresses[0], timeout=5)
    return dialled, await accepted.get()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_frames_arrive_whole_and_in_order_between_small_ones(loop: str) -> None:
    async def main() -> None:
        sender, receiver = await pair()
        sent = [b"small", BIG, b"tail", memoryview(BIG)[1:], b"x" * 70_000]
        async def receive(count: int) -> list[bytes]:
            got: list[bytes] = []
            while len(got) < count:
                got += await receiver.recv_many()
            return got

        for _ in range(3):
            receiving = asyncio.ensure_future(receive(len(sent) + 1))
            await sender.send_many(sent)  # type: ignore[arg-type]
            await sender.send(BIG[:100_000])
            got = await receiving
            assert [bytes(f) for f in got] == [bytes(f) for f in sent] + [BIG[:100_000]]
        await sender.close()
        await receiver.close()

    run(loop, main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_large_frame_cut_short_is_a_truncated_frame(loop: str) -> None:
    async def main() -> None:
        transport = TcpTransport(max_frame_size=8 << 20)
        accepted: asyncio.Queue[Connection] = asyncio.Queue()
        listener = await transport.listen("tcp://127.0.0.1:0", accepted.put)
        host, port = listener.addresses[0][len("tcp://"):].rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        receiver = await accepted.get()
        writer.write(struct.pack("!I", len(BIG)) + BIG[:3_000_000])
        await writer.drain()
        reading = asyncio.ensure_future(receiver.recv())
        await asyncio.sleep(0.2)  # the rest of the frame is now read straight into place
        writer.close()
        with pytest.raises(TransportError, match="truncated frame: 3000000 of 5120000"):
            await reading
        await receiver.close()
        await listener.close()

    run(loop, main)
