"""dht-discovery in real ``p2phost run`` processes over tcp on loopback, one bootstrap node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_project
from tests.runtime.processes import RunningNode

PLUGINS = ["tcp-transport", "json-codec", "noise-security", "echo", "dht-discovery"]


def peers_json(node: RunningNode) -> dict[str, object]:
    done = run_cli("peers", "--json", cwd=node.root, timeout=30)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def wait_until_connected(node: RunningNode, peer_id: str, timeout: float = 60) -> str:
    """The address ``node`` has for ``peer_id`` once connected; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for peer in peers_json(node)["peers"]:  # type: ignore[attr-defined]
            if peer["peer_id"] == peer_id:
                return str(peer["address"])
        time.sleep(0.3)
    pytest.fail(f"{node.root.name} never connected to {peer_id}:\n{node.stderr[-4000:]}")


def test_a_node_finds_another_by_peer_id_through_the_dht_and_messages_it(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    wheels = [official_wheels[p] for p in PLUGINS]

    def project(name: str, **config: object) -> Path:
        settings = {"lookup-interval": 0.5, "request-timeout": 3.0, **config}
        return write_project(tmp_path / name, PLUGINS, wheels=wheels, name=name,
                             config={"dht-discovery": settings})

    nodes: list[RunningNode] = []
    try:
        boot = RunningNode(project("boot"))
        nodes.append(boot)
        bob = RunningNode(project("bob", bootstrap=[boot.address], provide=["echo"]))
        nodes.append(bob)
        carol = RunningNode(project("carol", bootstrap=[boot.address]))
        nodes.append(carol)
        # Dave knows only the bootstrap node's address, Carol's peer id and a topic.
        dave = RunningNode(project("dave", bootstrap=[boot.address], find=[carol.peer_id],
                                   rendezvous=["echo"]))
        nodes.append(dave)

        address = wait_until_connected(dave, carol.peer_id)
        assert address == carol.address  # her signed record's address, not a guess
        wait_until_connected(dave, bob.peer_id)  # the provider of "echo"
        status = peers_json(dave)["discovery"]
        dht = next(p for p in status["plugins"]  # type: ignore[index]
                   if "contacts" in p["counters"])
        assert dht["counters"]["contacts"] >= 2, dht
        assert dht["name"] == "dht-discovery"  # the plugin's name, as static-discovery's
        assert dht["counters"]["records bad signature"] == 0
        assert status["dialling"]["targets"] >= 2  # type: ignore[index]

        done = run_cli("send", address, "echo", '{"text": "found you"}', "--request",
                       cwd=dave.root, timeout=30)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"text": "found you"}
    finally:
        for node in reversed(nodes):
            node.stop()
