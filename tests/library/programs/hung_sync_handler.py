"""A program whose plain-function handler is still sleeping (30 s) when its node closes
with a short drain: it must exit soon after, not when the handler's thread ends.

    python hung_sync_handler.py SERVER_STATE_DIR CLIENT_STATE_DIR MEM_ADDRESS
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time

import p2phost
from p2phost import Message


def manifest(name: str, listen: list[str]) -> dict[str, object]:
    return {"node": {"name": name, "listen": listen},
            "plugins": {"memory-transport": "*", "json-codec": "*"}}


async def main(server_dir: str, client_dir: str, address: str) -> None:
    started = threading.Event()
    server = p2phost.open_node(manifest=manifest("server", [address]), state_dir=server_dir)

    @server.handler("slow")
    def slow(message: Message) -> None:
        started.set()
        time.sleep(30)

    async with p2phost.open_node(manifest=manifest("client", []), state_dir=client_dir) as c:
        async with server:
            server.running.options = dataclasses.replace(server.running.options,
                                                         drain_timeout=0.5)
            peer = await c.connect(server.addresses[0])
            await c.send(peer, "slow", {})
            assert await asyncio.to_thread(started.wait, 10)
            print("handler running", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
    print("asyncio.run returned", flush=True)
