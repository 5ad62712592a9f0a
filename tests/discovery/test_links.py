"""Multi-homed and route-less hosts: each link hears only addresses reachable on it.

A node on two bridges (10.77.0.0/24 and 10.78.0.0/24, joined only through that node) is
announced on each with that bridge's address, so nobody ever dials an address it cannot
reach; and beacons work on hosts with no route at all for multicast (no default route).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .lan import LanNode, full_mesh, wait_for
from .netns import Lan, require_namespaces
from .test_netns import FIND_WITHIN, PLUGINS, _start, make_root

__all__ = ["make_root"]

#: Seconds every log is watched for dials to unreachable addresses (issue 23).
WATCH = 30.0


@pytest.fixture
def two_lans() -> Iterator[tuple[Lan, Lan]]:
    """Two bridges; host 1 of the first is also host 1 of the second (on eth1)."""
    require_namespaces()
    left, right = Lan(2), Lan(1, subnet="10.78.0")
    nodes: list[LanNode] = []
    try:
        left.create()
        right.create()
        right.attach(left.hosts[1], 1)
        yield left, right
    finally:
        for node in [*getattr(left, "nodes", []), *getattr(right, "nodes", [])]:
            node.kill()
        for node in nodes:
            node.kill()
        left.destroy()
        right.destroy()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_node_on_two_lans_is_announced_to_each_with_its_own_address(
    plugin: str, two_lans: tuple[Lan, Lan], make_root: Callable[..., Path],
) -> None:
    left, right = two_lans
    settings = {"scope": "lan", **({"interval": 0.5, "expiry": 2.0}
                                   if plugin == "beacon-discovery" else {"ttl": 3})}
    a = LanNode(left, 0, make_root(0, plugin, settings))
    both = LanNode(left, 1, make_root(1, plugin, settings))
    b = LanNode(right, 0, make_root(2, plugin, settings))
    nodes = [a, both, b]
    left.nodes = nodes  # type: ignore[attr-defined]  # for the fixture's clean-up
    for node in nodes:
        node.wait_started(60)
    wait_for(lambda: full_mesh([a, both])() and full_mesh([both, b])(), FIND_WITHIN,
             "each side connecting to the node on both", nodes)
    here, there = left.address(1), right.address(1)
    wait_for(lambda: f"found peer {both.peer_id}" in a.log and f"found peer {both.peer_id}"
             in b.log, FIND_WITHIN, "each side's discovery finding the node on both", nodes)
    deadline = time.monotonic() + WATCH
    while time.monotonic() < deadline:
        assert f"found peer {both.peer_id} at tcp://{here}:7400\n" in a.log + "\n"
        assert f"found peer {both.peer_id} at tcp://{there}:7400\n" in b.log + "\n"
        assert there not in a.log and here not in b.log
        for node in nodes:
            assert "cannot connect" not in node.log, node.log
            assert "unreachable" not in node.log.lower(), node.log
        time.sleep(1)
    assert a.peer_id not in b.peers() and b.peer_id not in a.peers()


def test_beacons_work_without_any_route_for_multicast(
    make_root: Callable[..., Path],
) -> None:
    """Hosts with no default route and no 224.0.0.0/4 route, ``interface`` unset."""
    require_namespaces()
    lan = Lan(3, multicast_route=False)
    lan.create()
    try:
        nodes = _start(lan, make_root, "beacon-discovery")
        wait_for(full_mesh(nodes), FIND_WITHIN, "three route-less nodes connecting", nodes)
        assert all("beaconing on eth0" in node.log for node in nodes)
    finally:
        for node in getattr(lan, "nodes", []):
            node.kill()
        lan.destroy()
