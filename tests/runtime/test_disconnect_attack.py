"""Messenger.disconnect from a careless or racing app: an unknown peer, twice at once,
and while sends to the same peer are in flight."""

from __future__ import annotations

import asyncio
import time

from recorder_app import Recorder

from p2phost_sdk import Identity, PeerUnavailable
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode


async def test_disconnect_of_an_unknown_peer_is_false_at_once(make_node: MakeNode) -> None:
    node = await make_node(listen=[])
    started = time.monotonic()
    assert not await node.disconnect(Identity.generate().peer_id)
    assert not await node.disconnect("not a peer id")
    assert time.monotonic() - started < 2.0


async def test_disconnect_twice_at_once_and_during_sends(make_node: MakeNode) -> None:
    recorder = Recorder()
    server = await make_node([recorder])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])

    async def send(i: int) -> str:
        try:
            await client.send(peer, "record", i)
        except PeerUnavailable:
            return "unavailable"
        return "sent"

    sends = [asyncio.ensure_future(send(i)) for i in range(200)]
    first, second = await asyncio.gather(client.disconnect(peer, reason="one"),
                                         client.disconnect(peer, reason="two"))
    outcomes = await asyncio.gather(*sends)  # none hangs, none raises anything else
    assert first or second
    assert set(outcomes) <= {"sent", "unavailable"}
    # What was sent arrived (the goodbye comes after what was queued).
    await wait_until(lambda: len(recorder.records.get(client.peer_id, [])) >=
                     outcomes.count("sent"), 5, "the sent messages arrive")
    # A new connection works: the recorder answers with how many it has from us.
    assert await client.request(server.addresses[0], "record", -1) >= outcomes.count("sent") + 1
