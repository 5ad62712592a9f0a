"""A one-way sender in its own process: ``offline_sender.py ADDRESS COUNT TOPIC...``.

Run in a project directory, it stores ``{"n": i}`` for i in 0..COUNT-1 on each TOPIC
(interleaved) for the peer of ADDRESS, without a handshake, and exits as soon as the
medium has acknowledged the last append. It prints how many it stored as soon as the
last is stored, before its node closes (a test may act on it while the sender exits).
"""

from __future__ import annotations

import asyncio
import sys

from p2phost._project import Project
from p2phost._runtime.node._assemble import node_for_project


async def main(address: str, count: int, topics: list[str]) -> None:
    node = node_for_project(Project.find(), client=True)
    stored = 0
    async with node:
        for n in range(count):
            for topic in topics:
                await node.store(address, topic, {"n": n})
                stored += 1
        print(stored, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
