"""`p2phost ping` and `send` reach a node through a relay: the CLI's short-lived client
node runs the relay's app (App.client), and takes its frames with `pull` requests, since a
relay sends a client only replies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from p2phost._project import Project
from p2phost._runtime.node._control import query_control
from tests.conftest import write_project
from tests.runtime.processes import RunningNode, free_port

PLUGINS = ["tcp-transport", "noise-security", "json-codec", "echo", "relay"]


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2phost", *args], cwd=root,
                          capture_output=True, text=True, timeout=60)


def test_ping_and_send_reach_a_node_through_a_relay(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    wheels = [official_wheels[p] for p in PLUGINS]
    roots = {name: tmp_path / name for name in ("relay", "behind", "me")}
    write_project(roots["relay"], PLUGINS, wheels=wheels, config={"relay": {"serve": True}})
    relay = RunningNode(roots["relay"])
    try:
        relay_at = "relay+" + relay.address
        write_project(roots["behind"], PLUGINS, wheels=wheels, listen=[relay_at])
        behind = RunningNode(roots["behind"])
        try:
            address = f"{relay_at}/p2p-circuit/{behind.peer_id}"
            assert behind.address == address
            write_project(roots["me"], PLUGINS, wheels=wheels, listen=[])
            done = cli(roots["me"], "ping", address, "--count", "3", "--interval", "0",
                       "--wait", "15", "--json")
            assert done.returncode == 0, done.stderr
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            assert summary["received"] == 3 and summary["lost"] == 0, summary
            text = "through the relay, end to end"
            done = cli(roots["me"], "send", address, "echo", json.dumps({"text": text}),
                       "--request")
            assert done.returncode == 0, done.stderr
            assert text in done.stdout
            # The relay forwarded both circuits and forgot them as the clients left.
            answer = query_control(Project(roots["relay"]).control_socket, "stats",
                                   timeout=10)
            assert answer["topics"]["relay"]["handled"] > 0, answer
        finally:
            behind.stop()
    finally:
        relay.stop()


def _until_logged(node: RunningNode, words: str, times: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while node.stderr.count(words) < times:
        assert time.monotonic() < deadline, f"not logged {times}x: {words!r}\n{node.stderr}"
        time.sleep(0.05)


def test_a_relayed_address_is_said_once_the_relay_grants_the_reservation(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    # overlay.md: `p2phost run` prints the relayed address once the relay granted the
    # reservation: not while a node that does not relay refuses it, nor while the relay
    # is down, and then as soon as a relay comes up there and grants it.
    wheels = [official_wheels[p] for p in PLUGINS]
    relay_at = f"relay+tcp://127.0.0.1:{free_port()}"
    roots = {name: tmp_path / name for name in ("relay", "behind")}
    listen = [relay_at.removeprefix("relay+")]
    write_project(roots["relay"], PLUGINS, wheels=wheels, listen=listen)
    not_a_relay = RunningNode(roots["relay"])
    write_project(roots["behind"], PLUGINS, wheels=wheels, listen=[relay_at])
    behind = RunningNode(roots["behind"], listening=False)
    try:
        _until_logged(behind, "not a relay")
        not_a_relay.stop()
        _until_logged(behind, "no reservation on the relay", times=2)  # then down
        assert not [line for line in behind.lines if line.startswith("listening on")], \
            behind.lines
        write_project(roots["relay"], PLUGINS, listen=listen, config={"relay": {"serve": True}})
        relay = RunningNode(roots["relay"])
        try:
            line = behind.wait_for("listening on ", timeout=40)
            assert line == f"listening on {relay_at}/p2p-circuit/{behind.peer_id}"
            assert "reachable through the relay" in behind.stderr
        finally:
            relay.stop()
    finally:
        behind.stop()
