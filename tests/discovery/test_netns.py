"""Discovery across real hosts: one ``p2phost run`` per network namespace, on one bridge.

Each test builds its own LAN (namespaces, veth pairs, a bridge in a namespace of its own,
addresses 10.77.0.0/24) and removes it afterwards. Skipped where namespaces cannot be
made; a failure under CI=true.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_project

from .lan import BASE_PLUGINS, FAST, PORT, LanNode, full_mesh, start_nodes, wait_for
from .netns import Lan, require_namespaces

PLUGINS = ["mdns-discovery", "beacon-discovery"]
#: Seconds for every node to be connected to every other, once all have started.
FIND_WITHIN = 15.0
#: Seconds a discovery plugin may take to report a SIGKILLed peer lost (expiry + margin).
#: (The usual worst case is about expiry + 0.5 and ttl + 3; the rest is room for 2 loaded cores.)
LOST_WITHIN = {"beacon-discovery": FAST["beacon-discovery"]["expiry"] + 6.0,
               "mdns-discovery": FAST["mdns-discovery"]["ttl"] + 10.0}


@pytest.fixture
def make_root(tmp_path: Path,
              official_wheels: dict[str, Path]) -> Callable[[int, str, Mapping[str, Any]], Path]:
    """A project per node: tcp on 0.0.0.0:7400, json, echo and one discovery plugin."""
    def make(index: int, plugin: str, settings: Mapping[str, Any]) -> Path:
        plugins = [*BASE_PLUGINS, plugin]
        return write_project(tmp_path / f"n{index}", plugins, name=f"n{index}",
                             wheels=[official_wheels[p] for p in plugins],
                             listen=[f"tcp://0.0.0.0:{PORT}"], config={plugin: settings})
    return make


@pytest.fixture
def lan_of() -> Iterator[Callable[[int], Lan]]:
    """``lan_of(n)``: a LAN of n hosts; every namespace and node is gone after the test."""
    require_namespaces()
    made: list[Lan] = []

    def make(size: int) -> Lan:
        lan = Lan(size)
        made.append(lan)
        lan.create()
        return lan
    yield make
    for lan in made:
        for node in getattr(lan, "nodes", []):
            node.kill()
        lan.destroy()


def discovered(nodes: list[LanNode]) -> bool:
    """Whether every node's discovery plugin found every other node."""
    return all(f"found peer {other.peer_id}" in node.log
               for node in nodes for other in nodes if other is not node)


def _start(lan: Lan, make_root: Callable[..., Path], plugin: str,
           **kwargs: Any) -> list[LanNode]:
    nodes = start_nodes(lan, make_root, plugin, **kwargs)
    lan.nodes = nodes  # type: ignore[attr-defined]  # for the fixture's clean-up
    return nodes


@pytest.mark.parametrize("plugin", PLUGINS)
def test_five_nodes_find_each_other_ignore_another_scope_and_lose_a_killed_one(
    plugin: str, lan_of: Callable[[int], Lan], make_root: Callable[..., Path],
) -> None:
    lan = lan_of(6)
    nodes = _start(lan, make_root, plugin, scopes={5: "another-app"})
    five, stranger = nodes[:5], nodes[5]

    took = wait_for(lambda: full_mesh(five)() and discovered(five), FIND_WITHIN,
                    "five nodes discovering and connecting to each other", nodes)
    print(f"{plugin}: 5 nodes all connected {took:.1f}s after the last one started")

    # Another application on the same LAN: never found, never connected.
    assert not stranger.peers()
    assert all(stranger.peer_id not in n.peers() and stranger.peer_id not in n.log
               for n in five)

    victim, survivors = five[4], five[:4]
    victim.kill()
    wait_for(lambda: all(victim.peer_id not in n.peers() for n in survivors),
             LOST_WITHIN[plugin], "`peers` dropping the SIGKILLed node", nodes)
    took = wait_for(lambda: all(f"lost peer {victim.peer_id}" in n.log for n in survivors),
                    LOST_WITHIN[plugin], "discovery reporting the SIGKILLed node lost", nodes)
    print(f"{plugin}: SIGKILLed node reported lost by discovery within {took:.1f}s")
    assert full_mesh(survivors)()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_partition_heals_to_all_connected(
    plugin: str, lan_of: Callable[[int], Lan], make_root: Callable[..., Path],
) -> None:
    lan = lan_of(3)
    nodes = _start(lan, make_root, plugin)
    wait_for(lambda: full_mesh(nodes)() and discovered(nodes), FIND_WITHIN,
             "three nodes discovering and connecting to each other", nodes)

    lan.set_link(0, up=False)
    cut = nodes[0]
    # Until the node's connections time out (keepalive) and discovery forgets it.
    wait_for(lambda: not cut.peers() and all(cut.peer_id not in n.peers() for n in nodes[1:]),
             30, "the cut-off node losing its peers", nodes)
    wait_for(lambda: all(f"lost peer {cut.peer_id}" in n.log for n in nodes[1:]), 5,
             "discovery losing the cut-off node", nodes)

    lan.set_link(0, up=True)
    took = wait_for(full_mesh(nodes), 30, "the healed LAN reconnecting", nodes)
    print(f"{plugin}: partition healed, all connected again within {took:.1f}s")


def test_an_address_where_another_peer_answers_is_dropped_at_once(
    lan_of: Callable[[int], Lan], make_root: Callable[..., Path],
) -> None:
    """Node 1 signs a record listing node 2's address before its own (a stale advertise
    setting): the others reach node 2 there, drop that address, count it, never redial."""
    lan = lan_of(3)

    def misconfigured(index: int, plugin: str, settings: Mapping[str, Any]) -> Path:
        if index == 1:
            settings = {**settings, "advertise": [f"tcp://{lan.address(2)}:{PORT}",
                                                  f"tcp://{lan.address(1)}:{PORT}"]}
        return make_root(index, plugin, settings)

    nodes = _start(lan, misconfigured, "beacon-discovery")
    wait_for(full_mesh(nodes), FIND_WITHIN, "three nodes connecting", nodes)
    wrong = f"dropped address tcp://{lan.address(2)}:{PORT} of {nodes[1].peer_id}"
    # The others dial node 1 first at node 2's address (unless node 1 dialled them first).
    wait_for(lambda: discovered(nodes), FIND_WITHIN, "every node finding node 1", nodes)
    time.sleep(3)
    for node in (nodes[0], nodes[2]):
        tries = node.log.count(wrong)
        assert tries <= 1, node.log  # dropped at once: never retried
        assert node.discovery()["dialling"]["wrong_peer"] == tries
    assert full_mesh(nodes)()


def test_several_discovery_plugins_merge_and_a_failing_one_stops_nothing(
    lan_of: Callable[[int], Lan], tmp_path: Path, official_wheels: dict[str, Path],
) -> None:
    """mDNS and beacons side by side; on node 2 the beacon plugin cannot start."""
    lan = lan_of(3)
    both = ["mdns-discovery", "beacon-discovery"]

    def make(index: int, plugin: str, settings: Mapping[str, Any]) -> Path:
        beacon = {**FAST["beacon-discovery"], "scope": "lan"}
        if index == 2:
            beacon["interface"] = "192.0.2.99"  # no such interface here: start() fails
        plugins = [*BASE_PLUGINS, *both]
        return write_project(tmp_path / f"n{index}", plugins, name=f"n{index}",
                             wheels=[official_wheels[p] for p in plugins],
                             listen=[f"tcp://0.0.0.0:{PORT}"],
                             config={"mdns-discovery": settings, "beacon-discovery": beacon})

    nodes = _start(lan, make, "mdns-discovery")
    wait_for(full_mesh(nodes), FIND_WITHIN, "three nodes connecting", nodes)
    assert "BeaconDiscovery failed to start, running without it" in nodes[2].log
    # Not silently: shown down with its fix, and retried.
    [beacon] = [p for p in nodes[2].discovery()["plugins"] if p["name"] == "beacon-discovery"]
    assert beacon["state"] == "down" and "[config.beacon-discovery] interface" in beacon["fix"]
    wait_for(lambda: any(p["attempts"] >= 2 for p in nodes[2].discovery()["plugins"]), 10,
             "a retry", nodes)
    for command in ("peers", "doctor"):
        shown = subprocess.run([sys.executable, "-m", "p2phost", command], cwd=nodes[2].root,
                               capture_output=True, text=True, timeout=60).stdout
        assert "discovery beacon-discovery is down" in shown and "fix: set " \
            "[config.beacon-discovery] interface" in shown, shown
    for plugin in both:  # nodes 0 and 1 found each other through both plugins
        assert f"p2phost.plugin.{plugin}: found peer {nodes[1].peer_id}" in nodes[0].log


def test_a_full_node_dials_only_up_to_its_peer_limit(
    lan_of: Callable[[int], Lan], make_root: Callable[..., Path],
) -> None:
    """Node 0 has ``peer-limit = 2`` among four beacon nodes: it never holds more."""
    lan = lan_of(4)

    def limited(index: int, plugin: str, settings: Mapping[str, Any]) -> Path:
        root = make_root(index, plugin, settings)
        if index == 0:
            manifest = root / "p2phost.toml"
            manifest.write_text(manifest.read_text().replace(
                "[node]\n", "[node]\npeer-limit = 2\n", 1))
        return root

    nodes = _start(lan, limited, "beacon-discovery")
    others = nodes[1:]
    wait_for(lambda: full_mesh(others)() and discovered(nodes), FIND_WITHIN,
             "the three unlimited nodes connecting", nodes)
    wait_for(lambda: len(nodes[0].peers()) == 2, 10, "node 0 filling its two places", nodes)
    first = nodes[0].peers()
    gone = next(n for n in others if n.peer_id in first)
    gone.kill()
    # A place frees up: node 0 takes the peer it could not connect to before.
    wait_for(lambda: len(nodes[0].peers()) == 2 and gone.peer_id not in nodes[0].peers(), 20,
             "node 0 filling the freed place", nodes)
    assert all(len(nodes[0].peers()) <= 2 for _ in range(5))
