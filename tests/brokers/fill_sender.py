"""A one-way sender in its own process: ``fill_sender.py ADDRESS TAG``.

Run in a project directory, it stores ``{"tag": TAG, "n": i}`` for i = 0, 1, ... for the
peer of ADDRESS until the inbox refuses one as full (or 500 were stored), and prints how
many it stored.
"""

from __future__ import annotations

import asyncio
import sys

from p2phost._project import Project
from p2phost._runtime.node._assemble import node_for_project


async def main(address: str, tag: str) -> int:
    node = node_for_project(Project.find(), client=True)
    stored = 0
    async with node:
        while stored < 500:
            try:
                await node.store(address, "note", {"tag": tag, "n": stored})
            except Exception as exc:  # the refusal ends it; anything else is printed
                if "is full (" not in str(exc):
                    raise
                break
            stored += 1
    return stored


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], sys.argv[2])))
