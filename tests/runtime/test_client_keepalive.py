"""Clients (a CLI's send or ping: a HELLO saying ``client``) count against ``[node]
peer-limit`` as peers do, so the keepalive judges them as it judges peers: one that says
hello and then nothing, and takes nothing, is closed after ``keepalive-timeout`` (it held
its place for good, and a handful of them kept every peer out)."""

from __future__ import annotations

import asyncio

from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import build_node
from tests.runtime.rawpeer import raw_tcp


async def _closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def test_a_silent_client_is_closed_and_its_place_freed() -> None:
    node = build_node("tcp", peer_limit=2, keepalive_interval=0.2, keepalive_timeout=1.0)
    await node.start()
    writers = []
    try:
        silent = [await raw_tcp(node.addresses[0], handshake=True, client=True)
                  for _ in range(2)]
        writers = [writer for _, writer in silent]
        await wait_until(lambda: node.stats()["connections"]["clients"] == 2, 10,
                         "both clients admitted")
        await asyncio.wait_for(asyncio.gather(*(_closed(r) for r, _ in silent)), 10)
        await wait_until(lambda: node.stats()["connections"]["clients"] == 0, 10,
                         "their places freed")
        peer = build_node("tcp", listen=[])
        await peer.start()
        try:
            assert await peer.connect(node.addresses[0]) == node.peer_id
        finally:
            await peer.close()
    finally:
        for writer in writers:
            writer.close()
        await node.close()
