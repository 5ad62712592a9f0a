"""A hostile DHT peer on wire version 2: junk in every field of a request, answers of
10,000 contacts or of junk, and unverified records that try to reach the table."""

from __future__ import annotations

from typing import Any

import pytest

from p2phost_sdk import Identity, PresenceSigner
from tests.dht.network import MemoryNetwork, build

from p2phost_dht_discovery import Dht, DhtError, encode  # isort: skip

JUNK: list[Any] = [None, 1, 2.0, True, [], {}, "", "x" * 52, "x" * 53, "é" * 60,
                   "A" * 100_000, ["a"], {"a": 1}, 2**70, -1]


@pytest.mark.parametrize("field", ["from", "key", "exact", "v", "record", "op"])
async def test_junk_in_any_request_field_is_a_dht_error_or_ignored(field: str) -> None:
    network = MemoryNetwork()
    node, stranger = network.add(), Identity.generate().peer_id
    node.rate.rate = node.rate.burst = 1e9
    for junk in JUNK:
        for op in ("ping", "find_node", "get_providers", "add_provider"):
            request: dict[str, Any] = {"v": 2, "op": op, "key": "00" * 32, field: junk}
            try:
                reply = await node.handle(stranger, request)
            except DhtError:
                continue
            assert reply["v"] == 2
    assert stranger not in node.table


async def test_an_answer_of_10000_contacts_or_of_junk_is_capped_and_harmless() -> None:
    _, nodes = await build(12)
    liar, asker = nodes[3], nodes[7]
    signer = PresenceSigner(Identity.generate())
    one = encode(signer.sign("dht", ["tcp://203.0.113.5:1"], lifetime=600))

    async def answer(sender: str, request: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await Dht.handle(liar, sender, request)
        reply["nodes"] = [*JUNK, *([one] * 5000),
                          *(Identity.generate().peer_id + one[52:] for _ in range(5000))]
        reply["providers"] = reply["nodes"]
        return reply
    liar.handle = answer  # type: ignore[method-assign]
    target = nodes[10]
    result = await asker.find_peer_result(target.peer_id)
    assert result.found == target.record()
    assert await asker.find_providers("some topic") == []
    assert len(asker.table) <= 12


async def test_a_forged_exact_answer_does_not_end_a_peer_lookup() -> None:
    _, nodes = await build(20)
    liar, asker, target = nodes[2], nodes[9], nodes[15]
    forger = PresenceSigner(Identity.generate())
    forged = target.peer_id + encode(forger.sign("dht", ["tcp://203.0.113.66:1"],
                                                 lifetime=600))[52:]

    async def answer(sender: str, request: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await Dht.handle(liar, sender, request)
        if isinstance(request, dict) and request.get("exact") is True:
            reply["nodes"] = [forged]  # "I have the target's record: here"
        return reply
    liar.handle = answer  # type: ignore[method-assign]
    asker.table.remove(target.peer_id)
    result = await asker.find_peer_result(target.peer_id)
    assert result.found == target.record()
    assert "tcp://203.0.113.66:1" not in result.found.addresses
