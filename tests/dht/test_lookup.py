"""The lookup's own requests: none outlives it, and a peer that never answers costs at
most the lookup's deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from p2phost_sdk import Identity
from tests.dht.network import MemoryNetwork, build

from p2phost_dht_discovery import DhtSettings, peer_key  # isort: skip
from p2phost_dht_discovery._keys import bucket_index  # isort: skip


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_a_lookup_that_found_its_target_leaves_no_request_running() -> None:
    # Joined with their own key only: joining bucket by bucket, 40 nodes mostly know each
    # other, and as few as 18 of the 1,482 pairs are left to look up (fewer than the 10
    # finds this needs, now and then).
    network, nodes = await build(40, settings=DhtSettings(
        request_timeout=30.0, lookup_timeout=120.0, join_refresh=False))
    slow: set[str] = set()
    for node in nodes[1:]:
        real = node.handle

        async def answer(sender: str, request: Any, real: Any = real,
                         peer: str = node.peer_id) -> dict[str, Any]:
            if peer in slow:
                await asyncio.sleep(60)  # still in flight when the target is found
            reply: dict[str, Any] = await real(sender, request)
            return reply
        node.handle = answer  # type: ignore[method-assign]
    assert not other_tasks()
    found = cancelled = 0
    for asker in nodes[1:]:
        for target in nodes[1:]:
            if target is asker or target.peer_id in asker.table:
                continue
            # All but the closest contact answer late: that one's answer ends the lookup.
            contacts = asker.table.closest(peer_key(target.peer_id), 3)
            slow.clear()
            slow.update(c.peer_id for c in contacts[1:])
            result = await asker.find_peer_result(target.peer_id)
            if result.found is not None:
                found += 1
                cancelled += result.queried < 3
            assert not other_tasks()  # the slow requests were cancelled and awaited
            if found >= 10:
                break
        if found >= 10:
            break
    assert found >= 10 and cancelled
    assert network.requests


async def test_a_peer_that_never_answers_costs_at_most_the_deadline() -> None:
    network = MemoryNetwork()
    settings = DhtSettings(request_timeout=30.0, lookup_timeout=0.3)
    asker, mute = network.add(settings=settings), network.add()
    await asker.ping(mute.peer_id, mute.addresses)

    async def never(sender: str, request: Any) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
    mute.handle = never  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await asker.lookup_key(12345)
    assert loop.time() - started < 10  # the 0.3 s deadline, not the 30 s request timeout
    assert result.closest == [] and result.queried == 0
    assert not other_tasks()


async def test_a_join_whose_bucket_lookups_time_out_ends_within_two_lookup_deadlines() -> None:
    # join_refresh looks up a key per bucket farther than the closest contact's. When the
    # contacts it is offered never answer, each of those lookups runs to its deadline: a
    # join must still end in a bounded time (its own key's lookup, then one deadline shared
    # by the bucket lookups), not one deadline per bucket (up to 33 of them), during which
    # the node neither provides nor looks anything up.
    network, nodes = await build(24)
    bootstrap = nodes[0]
    # A newcomer whose closest contact (the bootstrap) shares 10 leading bits with it: 10
    # bucket lookups to make after its own key's.
    identity = Identity.generate()
    while bucket_index(peer_key(identity.peer_id), peer_key(bootstrap.peer_id)) < 10:
        identity = Identity.generate()
    newcomer = network.add(identity, settings=DhtSettings(request_timeout=30.0,
                                                          lookup_timeout=0.3))

    async def never(sender: str, request: Any) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
    for node in nodes[1:]:  # only the bootstrap answers; whom it offers never does
        node.handle = never  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await newcomer.join([(bootstrap.peer_id, bootstrap.addresses)]) == 1
    # Own key 0.3 s + buckets 0.3 s shared, with room for a loaded machine; one deadline
    # per bucket would be 3.3 s at least.
    assert loop.time() - started < 2.0
    assert not other_tasks()
