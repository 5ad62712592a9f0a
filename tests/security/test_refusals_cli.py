"""The outside tester's repro, through the installed CLI: `p2phost ping` to a `p2phost run`
node at its `peer-limit` (noise-security on both ends) names the refusal and its fix, not a
security mismatch."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from p2phost._project import Project
from p2phost._runtime.node._control import query_control
from tests.conftest import write_project
from tests.runtime.processes import RunningNode

PLUGINS = ["tcp-transport", "noise-security", "json-codec", "echo"]


@contextmanager
def held_open(address: str, count: int) -> Iterator[None]:
    """``count`` idle TCP connections to ``address``, opened again as soon as the node
    closes one (it does after its handshake timeout, 5 s)."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    done = threading.Event()

    def hold() -> None:
        while not done.is_set():
            with socket.create_connection((host, int(port))) as sock:
                sock.settimeout(0.1)
                while not done.is_set():
                    try:
                        if sock.recv(4096) == b"":
                            break  # closed by the node: open another at once
                    except TimeoutError:
                        continue
                    except OSError:
                        break

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(5)


def test_ping_to_a_node_at_its_peer_limit_names_the_refusal_and_its_fix(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    wheels = [official_wheels[p] for p in PLUGINS]
    server = write_project(tmp_path / "pl", PLUGINS, wheels=wheels)
    manifest = server / "p2phost.toml"
    manifest.write_text(manifest.read_text().replace("[node]\n", "[node]\npeer-limit = 2\n"))
    me = write_project(tmp_path / "me", PLUGINS, wheels=wheels, listen=[])
    node = RunningNode(server)
    try:
        with held_open(node.address, 2):
            deadline = time.monotonic() + 10
            while query_control(Project(server).control_socket, "stats")[
                    "connections"]["handshaking"] < 2:
                assert time.monotonic() < deadline, "the held connections were not admitted"
                time.sleep(0.05)
            done = subprocess.run([sys.executable, "-m", "p2phost", "ping", node.address,
                                   "--count", "1"], cwd=me, capture_output=True, text=True,
                                  timeout=60)
    finally:
        node.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the peer refused the connection: peer limit reached (2)" in done.stderr
    assert "fix: the refusing node is full: its operator raises peer-limit under [node]" \
        in done.stderr
    assert "secure the connection" not in done.stderr and "noise" not in done.stderr
    assert "refused a connection from " in node.stderr
