"""Two peers that flood each other with requests at once: p2phost beside raw asyncio.

Each peer sends COUNT requests to the other at the same moment and answers the other's.
p2phost: two nodes over tcp-transport (``messaging.bench_node``). Raw asyncio: the
peer a program would write by hand on one connection, with one reader task that answers
each request with ``write`` and ``await drain()`` and resolves its own requests' futures.
Both run in this process, on asyncio's loop. The script prints how many requests of each
were answered and how long that took; a deadlocked pair answers none within the
deadline.

    python benchmarks/floods.py            # every flood
    python benchmarks/floods.py --deadline 10

Before p2phost bounded its requests in flight and read on while waiting for room (the
eighteenth session), its pairs deadlocked on these floods as the raw pair does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from messaging import bench_node

LENGTH, ID = struct.Struct("!I"), struct.Struct("!Q")
#: (what, request body, answer size or None for the body itself, requests each way)
FLOODS = [("16 KiB requests", bytes(16384), None, 2000),
          ("100 B requests", bytes(100), None, 50000),
          ("small requests for 64 KiB answers", b"big", 65536, 2000)]


class RawPeer:
    """One end of a raw asyncio connection that asks and answers: frames b"r" + id +
    body (a request) and b"a" + id + body (its answer)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 answer: Callable[[bytes], bytes]) -> None:
        self.reader, self.writer, self.answer = reader, writer, answer
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        reader, writer = self.reader, self.writer
        while True:
            (size,) = LENGTH.unpack(await reader.readexactly(4))
            frame = await reader.readexactly(size)
            if frame[:1] == b"r":
                answer = b"a" + frame[1:9] + self.answer(frame[9:])
                writer.write(LENGTH.pack(len(answer)) + answer)
                await writer.drain()
            else:
                self.pending.pop(ID.unpack_from(frame, 1)[0]).set_result(frame[9:])

    async def request(self, body: bytes) -> bytes:
        message_id = next(self.ids)
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[message_id] = reply
        frame = b"r" + ID.pack(message_id) + body
        self.writer.write(LENGTH.pack(len(frame)) + frame)
        await self.writer.drain()
        return await reply


async def raw_pair(answer: Callable[[bytes], bytes]) -> tuple[RawPeer, RawPeer, Any]:
    accepted: asyncio.Future[RawPeer] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(RawPeer(reader, writer, answer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return RawPeer(reader, writer, answer), await accepted, server


async def flood(asks: list[Callable[[], Awaitable[Any]]], deadline: float,
                expected: Callable[[Any], bool]) -> tuple[int, float]:
    """How many of ``asks`` were answered as expected within ``deadline``, in how long."""
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(ask()) for ask in asks]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    took = time.perf_counter() - started
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    answered = sum(1 for task in done
                   if not task.cancelled() and task.exception() is None
                   and expected(task.result()))
    return answered, took


async def run_raw(body: bytes, size: int | None, count: int, deadline: float) -> tuple[int, float]:
    def answer(asked: bytes) -> bytes:
        return asked if size is None else bytes(size)

    a, b, server = await raw_pair(answer)
    try:
        want = body if size is None else bytes(size)
        return await flood([lambda peer=peer: peer.request(body)  # type: ignore[misc]
                            for _ in range(count) for peer in (a, b)],
                           deadline, lambda got: got == want)
    finally:
        for peer in (a, b):
            peer.task.cancel()
            peer.writer.close()
        server.close()


async def run_p2phost(body: bytes, size: int | None, count: int,
                      deadline: float) -> tuple[int, float]:
    async def big() -> bytes:
        return bytes(size or 0)

    a, b = bench_node(0, answers={b"big": big}), bench_node(0, answers={b"big": big})
    async with a, b:
        peer_a, peer_b = a.peer_id, await a.connect(b.addresses[0])
        want = body if size is None else bytes(size)
        return await flood(
            [lambda node=node, peer=peer: node.request(peer, "echo", body,  # type: ignore[misc]
                                                       timeout=deadline)
             for _ in range(count) for node, peer in ((a, peer_b), (b, peer_a))],
            deadline, lambda got: got == want)


async def main(deadline: float) -> None:
    print(f"two peers, each sending N requests to the other at once (deadline {deadline:g} s)")
    print(f"{'flood':<52}{'p2phost':>30}{'raw asyncio':>30}{'speed, p2phost / raw':>24}")
    for what, body, size, count in FLOODS:
        cells, outcomes = [], []
        for run in (run_p2phost, run_raw):
            answered, took = await run(body, size, count, deadline)
            cells.append(f"{answered:,} of {2 * count:,} in {took:.2f} s")
            outcomes.append((answered == 2 * count, took))
        (ours, our_time), (theirs, their_time) = outcomes
        ratio = f"{their_time / our_time:.2f}" if ours and theirs else \
            "raw deadlocked" if ours else "p2phost failed"
        print(f"{what + f', {count:,} each way':<52}{cells[0]:>30}{cells[1]:>30}{ratio:>24}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=20.0,
                        help="seconds a flood may take (default 20)")
    asyncio.run(main(parser.parse_args().deadline))
