"""Through the installed CLI: `p2phost ping` to a `p2phost run` node at its `peer-limit`
(noise-security on both ends) names the refusal and its fix, not a security mismatch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from p2phost._project import Project
from p2phost._runtime.node._control import query_control
from tests.conftest import write_project
from tests.runtime.processes import RunningNode

PLUGINS = ["tcp-transport", "noise-security", "json-codec", "echo"]


def ping(address: str, *args: str) -> list[str]:
    """The command line of ``p2phost ping address``."""
    return [sys.executable, "-m", "p2phost", "ping", address, *args]


def test_ping_to_a_node_at_its_peer_limit_names_the_refusal_and_its_fix(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    wheels = [official_wheels[p] for p in PLUGINS]
    server = write_project(tmp_path / "pl", PLUGINS, wheels=wheels)
    manifest = server / "p2phost.toml"
    manifest.write_text(manifest.read_text().replace("[node]\n", "[node]\npeer-limit = 2\n"))
    me = write_project(tmp_path / "me", PLUGINS, wheels=wheels, listen=[])
    node = RunningNode(server)
    # Two clients that keep pinging fill its peer limit (handshakes in progress would
    # not: they are bounded apart).
    clients = [subprocess.Popen(ping(node.address, "--count", "600", "--interval", "0.1"),
                                cwd=me, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while query_control(Project(server).control_socket, "stats")[
                "connections"]["clients"] < 2:
            assert time.monotonic() < deadline, "the two pinging clients did not connect"
            time.sleep(0.05)
        done = subprocess.run(ping(node.address, "--count", "1"), cwd=me,
                              capture_output=True, text=True, timeout=60)
    finally:
        for client in clients:
            client.kill()
            client.wait()
        node.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the peer refused the connection: peer limit reached (2)" in done.stderr
    assert "fix: the refusing node is full: its operator raises peer-limit under [node]" \
        in done.stderr
    assert "secure the connection" not in done.stderr and "noise" not in done.stderr
    assert "refused a connection from " in node.stderr
