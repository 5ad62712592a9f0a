"""Two nodes that dial each other at the same moment (as two Dask processes whose
discovery finds each other do): both ends keep one connection and retire the other, and
what an app sends meanwhile still arrives, and is answered."""

from __future__ import annotations

import asyncio
import logging

import pytest
from recorder_app import Recorder

from p2phost._runtime import Node
from p2phost_sdk import PeerInfo
from tests.runtime.conftest import build_node

#: Rounds of simultaneous dials, and how long they may take in all.
ROUNDS, SECONDS = 20, 60.0


class Arrivals(Recorder):
    """A recorder that tells when a peer connects, as dask-comm's ``wait_connected``
    learns it (the app's ``on_peer_connected``)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        await super().on_peer_connected(peer)
        self.arrived.set()


async def _request_on_arrival(node: Node, app: Arrivals, other: Node) -> int:
    # The dial runs on; the request goes as soon as the app hears of the peer.
    dial = asyncio.create_task(node.connect(other.addresses[0]))
    try:
        await app.arrived.wait()
        reply = await node.request(other.peer_id, "record", node.peer_id, timeout=5.0)
        assert isinstance(reply, int)
        return reply
    finally:
        await asyncio.gather(dial, return_exceptions=True)


async def test_requests_sent_while_a_duplicate_connection_is_retired_are_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The request of one end often goes on the connection both ends retire; it was
    # answered on it after the requester had said goodbye there and closed it: the reply
    # was lost, and the request timed out (RequestTimeout after its whole timeout).
    caplog.set_level(logging.DEBUG, "p2phost.node")
    async with asyncio.timeout(SECONDS):
        for _ in range(ROUNDS):
            apps = [Arrivals(), Arrivals()]
            nodes = [build_node("tcp", [app]) for app in apps]
            try:
                for node in nodes:
                    await node.start()
                a, b = nodes
                assert await asyncio.gather(_request_on_arrival(a, apps[0], b),
                                            _request_on_arrival(b, apps[1], a)) == [1, 1]
            finally:
                for node in reversed(nodes):
                    await node.close()
    # (the dials did cross: a duplicate was retired)
    assert "duplicate connection (the other one is kept)" in caplog.text
