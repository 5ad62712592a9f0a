"""A join dials a bounded number of peers, alpha at a time; a refresh ends within one
timeout, however many buckets it has to look up; both are set in [config.dht-discovery]."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from p2phost_sdk import ConfigError, PluginMetadata

from .network import MemoryNetwork, MemoryRpc, build

from p2phost_dht_discovery import Dht, DhtSettings  # isort: skip
from p2phost_dht_discovery._plugin import settings_of  # isort: skip

PLUGIN = Path(__file__).resolve().parents[2] / "official-plugins" / "dht-discovery"


class Watching(MemoryRpc):
    """A MemoryRpc that records whom it asks and how many requests are in flight."""

    def __init__(self, rpc: MemoryRpc) -> None:
        super().__init__(rpc.network, rpc.sender)
        self.asked: set[str] = set()
        self.in_flight = self.most_in_flight = 0

    async def call(self, peer_id: str, addresses: Sequence[str],
                   request: dict[str, Any]) -> dict[str, Any]:
        self.asked.add(peer_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.0005)  # answers overlap, as on a network
            return await super().call(peer_id, addresses, request)
        finally:
            self.in_flight -= 1


async def _join_watched(network: MemoryNetwork, bootstrap: Dht,
                        settings: DhtSettings) -> tuple[Dht, Watching]:
    newcomer = network.add(settings=settings)
    watch = newcomer._rpc = Watching(newcomer._rpc)  # type: ignore[assignment]
    await newcomer.join([(bootstrap.peer_id, bootstrap.addresses)])
    return newcomer, watch


async def test_a_join_asks_a_bounded_number_of_peers_alpha_at_a_time() -> None:
    # 120 nodes: enough that an unbounded join asks more than 25 of them.
    network, nodes = await build(120, seed=11, settings=DhtSettings(
        request_timeout=30.0, lookup_timeout=120.0))
    for join_peers in (0, 25):
        settings = DhtSettings(request_timeout=30.0, lookup_timeout=120.0,
                               join_peers=join_peers)
        newcomer, watch = await _join_watched(network, nodes[0], settings)
        budget = join_peers or settings.alpha * settings.k
        assert newcomer.join_budget == budget
        assert 0 < len(watch.asked) <= budget, len(watch.asked)
        assert watch.most_in_flight <= settings.alpha
        assert newcomer.counters["join peers asked"] == len(watch.asked)
        # Still a useful table: the newcomer finds a peer it never asked.
        strangers = [p for p in network.nodes if p not in watch.asked
                     and p != newcomer.peer_id]
        assert await newcomer.find_peer(random.Random(3).choice(strangers)) is not None
    # join-refresh off: one lookup, of its own key.
    settings = DhtSettings(request_timeout=30.0, lookup_timeout=120.0, join_refresh=False)
    newcomer, watch = await _join_watched(network, nodes[0], settings)
    assert newcomer.counters["lookups"] == 1
    assert len(watch.asked) <= settings.k + settings.alpha + 1


async def test_a_refresh_ends_within_its_one_timeout() -> None:
    # Every contact answers only after 5 s (the request timeout): a refresh bounded per
    # ping and per bucket would take seconds on end; one timeout ends it.
    network, nodes = await build(30, seed=4)
    node = nodes[-1]
    assert len(node.table) > 10
    node.settings.refresh_timeout = 0.5
    network.latency = node.settings.request_timeout = 5.0
    started = time.monotonic()
    async with asyncio.timeout(4.5):
        await node.refresh(all_buckets=True)
    assert time.monotonic() - started < 3.0
    assert node.counters["refreshes cut short"] == 1 and node.counters["refreshes"] == 0
    assert len(node.table) > 10  # a ping cut short is no failure: nobody evicted


def test_join_and_refresh_bounds_come_from_the_config() -> None:
    # As p2phost.toml's [config.dht-discovery] reaches the plugin: checked against the
    # schema its pyproject.toml declares, then read.
    schema = PluginMetadata.from_pyproject(PLUGIN / "pyproject.toml").config
    table = schema.validate({"join-refresh": False, "join-peers": 12,
                             "refresh-timeout": 9.5}, "dht-discovery")
    settings = settings_of("dht-discovery", table)
    assert (settings.join_refresh, settings.join_peers, settings.refresh_timeout) \
        == (False, 12, 9.5)
    defaults = settings_of("dht-discovery", {})
    assert defaults.join_refresh and defaults.join_peers == 0
    for bad in ({"join-peers": -1}, {"refresh-timeout": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            settings_of("dht-discovery", bad)
