"""Two programs (not ``p2phost run``), one on the async API and one on the blocking API,
exchange sends, requests, publishes and acknowledged messages over tcp+noise and redis; and
a script asks a node that ``p2phost run`` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit

import p2phost
from tests.conftest import service_or_skip
from tests.library.conftest import StateDir, manifest
from tests.runtime.processes import RunningNode

PROGRAMS = Path(__file__).resolve().parent / "programs"
MEDIA = {
    "tcp+noise": ("tcp://127.0.0.1:0", ["tcp-transport", "noise-security", "json-codec"]),
    "redis": ("redis://127.0.0.1:6379/0", ["redis-transport", "noise-security", "json-codec"]),
}


@pytest.mark.parametrize("medium", sorted(MEDIA))
def test_an_async_program_and_a_blocking_script_talk(state_dir: StateDir, medium: str) -> None:
    listen, plugins = MEDIA[medium]
    if medium == "redis":
        service_or_skip("Redis", 6379)
    server = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "async_server.py"), str(state_dir("server")), listen,
         *plugins], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("address: "), line + (server.stderr.read() if server.stderr
                                                     else "")
        address = line.split(": ", 1)[1].strip()
        client = subprocess.run(
            [sys.executable, str(PROGRAMS / "blocking_client.py"), str(state_dir("client")),
             address, *plugins], capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        result = json.loads(client.stdout)
        assert result["published"] == 1
        assert result["seen"] == {"note": ["a note"], "news": ["some news"], "jobs": [0, 1, 2]}
    finally:
        if server.stdin is not None:
            server.stdin.close()  # the server closes (draining) and exits
        try:
            assert server.wait(30) == 0
        finally:
            server.kill()


def test_a_script_asks_a_node_that_p2phost_run_runs(state_dir: StateDir) -> None:
    plugins = (*MEDIA["tcp+noise"][1], "echo")
    root = state_dir("runner")
    (root / "p2phost.toml").write_text(tomlkit.dumps(
        manifest(["tcp://127.0.0.1:0"], plugins=plugins, name="runner")))
    node = RunningNode(root)
    try:
        with p2phost.connect(manifest=manifest(plugins=plugins),
                             state_dir=state_dir("script")) as script:
            assert script.connect(node.address) == node.peer_id
            assert script.request(node.peer_id, "echo", {"n": 1}) == {"n": 1}
    finally:
        assert node.stop() == 0
