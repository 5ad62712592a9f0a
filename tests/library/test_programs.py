"""Two programs (not ``p2phost run``), one on the async API and one on the blocking API,
exchange sends, requests, publishes and acknowledged messages over tcp+noise and redis; and
a script asks a node that ``p2phost run`` runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomlkit

import p2phost
from tests.conftest import run_cli, service_or_skip
from tests.library.conftest import StateDir, manifest, mem_address
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


def test_the_cli_in_a_programs_state_dir_says_to_start_that_program(
        state_dir: StateDir, tmp_path: Path) -> None:
    # `p2phost run` there would run the node without the program's handlers (retried
    # dead letters would die again as "no app handles topic"): the fix names the program.
    root = state_dir("program")
    script = tmp_path / "worker.py"
    script.write_text(
        "import asyncio, sys, p2phost\n"
        "async def main():\n"
        "    async with p2phost.open_node(manifest={'node': {'name': 'w', 'listen': []},\n"
        "            'plugins': {'memory-transport': '*', 'json-codec': '*'}},\n"
        "            state_dir=sys.argv[1]):\n"
        "        pass\n"
        "asyncio.run(main())\n")
    subprocess.run([sys.executable, str(script), str(root)], check=True, timeout=60)
    done = run_cli("peers", cwd=root)
    assert done.returncode != 0
    assert f"fix: start it with its program, {script.resolve()}: it opens this node with " \
           "its handlers, which `p2phost run` would not run" in done.stderr, done.stderr
    # A project of its own is started as ever.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "p2phost.toml").write_text(tomlkit.dumps(manifest()))
    plain = run_cli("peers", cwd=tmp_path / "plain")
    assert "fix: start it with `p2phost run`" in plain.stderr, plain.stderr


def test_a_sync_handler_running_at_close_does_not_keep_the_program_alive(
        state_dir: StateDir) -> None:
    # A thread cannot be cancelled; the node must not wait for it, nor may the interpreter.
    started = time.monotonic()
    program = subprocess.run(
        [sys.executable, str(PROGRAMS / "hung_sync_handler.py"), str(state_dir("server")),
         str(state_dir("client")), mem_address()], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert program.returncode == 0, program.stderr
    assert program.stdout.split("\n")[:2] == ["handler running", "asyncio.run returned"]
    assert took < 15, f"the program exited {took:.1f}s after it started (the handler sleeps 30s)"
