"""Many nodes in one process: 50 on the memory transport pass a token around a ring."""

from __future__ import annotations

import asyncio
import contextlib

import p2phost
from p2phost import Message
from tests.library.conftest import StateDir, manifest, mem_address

NODES, ROUNDS = 50, 10


async def test_fifty_nodes_pass_a_token_ten_times_around_a_ring(state_dir: StateDir) -> None:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    nodes = [p2phost.open_node(manifest=manifest([mem_address()], name=f"n{i}"),
                               state_dir=state_dir(f"n{i}"), control=False)
             for i in range(NODES)]
    nexts: list[str] = [""] * NODES

    for i, node in enumerate(nodes):
        def passing(i: int, node: p2phost.AsyncNode):  # type: ignore[no-untyped-def]
            async def token(message: Message) -> None:
                hops = message.body["hops"] + 1
                if hops == NODES * ROUNDS:
                    done.set_result(i)
                    return
                await node.send(nexts[i], "token", {"hops": hops})
            return token
        node.handler("token")(passing(i, node))

    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        for i, node in enumerate(nodes):
            nexts[i] = await node.connect(nodes[(i + 1) % NODES].addresses[0])
        await nodes[0].send(nexts[0], "token", {"hops": 0})
        # The token's last hop lands back on the node that started it.
        assert await asyncio.wait_for(done, 30) == 0
        handled = sum(n.stats()["topics"].get("token", {}).get("handled", 0) for n in nodes)
        assert handled == NODES * ROUNDS
