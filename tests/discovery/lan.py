"""``p2phost run`` nodes on a private LAN of network namespaces (one node per namespace).

Shared by tests/discovery/test_netns.py and benchmarks/discovery.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2phost._project import Project
from p2phost._runtime import NodeNotRunning, query_control

from .netns import Lan

BASE_PLUGINS = ("tcp-transport", "json-codec", "echo")
PORT = 7400

#: Fast settings per discovery plugin, so tests and benchmarks need not wait long.
FAST: dict[str, dict[str, Any]] = {
    "beacon-discovery": {"interval": 0.5, "expiry": 2.0},
    "mdns-discovery": {"ttl": 3},
    "broker-discovery": {"interval": 0.5, "expiry": 2.0},
}


class LanNode:
    """One ``p2phost run`` process inside host ``index`` of a :class:`Lan`."""

    def __init__(self, lan: Lan, index: int, root: Path) -> None:
        self.lan, self.index, self.root = lan, index, root
        self.log_path = root / "node.log"
        self.started = time.monotonic()
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                lan.command(index, [sys.executable, "-m", "p2phost", "run"]), cwd=root,
                stdout=log, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.peer_id = ""

    @property
    def log(self) -> str:
        """Everything the node printed and logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float) -> None:
        """Wait for ``peer id: ...`` (RuntimeError with the log if the node died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.splitlines():
                if line.startswith("peer id: "):
                    self.peer_id = line.split(": ", 1)[1].strip()
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"node {self.index} did not start:\n{self.log}")

    def peers(self) -> set[str]:
        """Peer ids the node is connected to now (empty if it does not answer)."""
        try:
            answer = query_control(Project(self.root).control_socket, "peers", 2.0)
        except NodeNotRunning:
            return set()
        return {p["peer_id"] for p in answer.get("peers", [])}

    def discovery(self) -> dict[str, Any]:
        """The node's discovery plugins (state, counters) and dial counters."""
        try:
            answer = query_control(Project(self.root).control_socket, "peers", 2.0)
        except NodeNotRunning:
            return {}
        return dict(answer.get("discovery") or {})

    def counter(self, name: str) -> int:
        """The sum of counter ``name`` over the node's discovery plugins."""
        plugins = self.discovery().get("plugins", [])
        return sum(int(p.get("counters", {}).get(name, 0)) for p in plugins)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and reap the process."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_nodes(
    lan: Lan,
    make_root: Callable[[int, str, Mapping[str, Any]], Path],
    plugin: str,
    *,
    scopes: Mapping[int, str] | None = None,
    config: Mapping[str, Any] | None = None,
    timeout: float = 60,
) -> list[LanNode]:
    """One node per host of ``lan``, discovering with ``plugin`` (scope "lan" unless given)."""
    nodes = []
    for index in range(lan.size):
        scope = (scopes or {}).get(index, "lan")
        settings = {**FAST.get(plugin, {}), "scope": scope, **(config or {})}
        nodes.append(LanNode(lan, index, make_root(index, plugin, settings)))
    for node in nodes:
        node.wait_started(timeout)
    return nodes


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             nodes: Sequence[LanNode] = ()) -> float:
    """Poll ``condition``; the seconds it took. AssertionError (with node logs) after timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            logs = "\n".join(f"--- node {n.index} ({n.peer_id[:12]}):\n{n.log[-3000:]}"
                             for n in nodes)
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{logs}")
        time.sleep(0.1)
    return time.monotonic() - start


def full_mesh(nodes: list[LanNode]) -> Callable[[], bool]:
    """A condition: every node is connected to every other of ``nodes``."""
    ids = {n.peer_id for n in nodes}

    def check() -> bool:
        return all(n.peers() >= ids - {n.peer_id} for n in nodes)
    return check
