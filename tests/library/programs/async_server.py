"""A program with a p2phost node (the async API): it answers, records what it gets, and
reports it. Prints ``address: ADDR`` once open; runs until its standard input closes.

    python async_server.py STATE_DIR LISTEN PLUGIN...
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import p2phost
from p2phost import Message


async def main(state_dir: str, listen: str, plugins: list[str]) -> None:
    seen: dict[str, list[Any]] = {"note": [], "news": [], "jobs": []}
    node = p2phost.open_node(
        manifest={"node": {"name": "server", "listen": [listen]},
                  "plugins": {p: "*" for p in plugins}},
        state_dir=state_dir)

    @node.handler("echo")
    async def echo(message: Message) -> Any:
        return message.body

    for topic in ("note", "news"):
        node.handler(topic)(lambda message: seen[message.topic].append(message.body))

    @node.handler("jobs", delivery="at-least-once")
    async def jobs(message: Message) -> None:
        if message.body not in seen["jobs"]:  # at least once: a resend may come
            seen["jobs"].append(message.body)

    @node.handler("report")
    async def report(message: Message) -> Any:
        return seen

    async with node:
        print(f"address: {node.addresses[0]}", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
