"""Every program in examples/ runs as a user would run it, against real nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomlkit

import p2phost
from tests.conftest import REPO
from tests.library.conftest import StateDir, manifest
from tests.runtime.processes import free_port

EXAMPLES = REPO / "examples"
TCP = ("tcp-transport", "json-codec", "noise-security")


def test_every_example_is_run_here() -> None:
    ran = {"notebook_script.py", "worker_pool.py", "fastapi_gateway.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == ran


def _project(state_dir: StateDir, name: str) -> Path:
    root = state_dir(name)
    (root / "p2phost.toml").write_text(tomlkit.dumps(manifest(plugins=TCP, name=name)))
    return root


@pytest.fixture
def echo_peer(state_dir: StateDir) -> Iterator[str]:
    """The address of a node (the blocking API, in this process) running the echo app."""
    with p2phost.connect(manifest=manifest(["tcp://127.0.0.1:0"], plugins=(*TCP, "echo")),
                         state_dir=state_dir("echo-peer")) as peer:
        yield peer.addresses[0]


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=90, check=False, **kwargs)  # type: ignore[call-overload]


def test_notebook_script(state_dir: StateDir, echo_peer: str) -> None:
    done = _run(str(EXAMPLES / "notebook_script.py"), str(_project(state_dir, "nb")), echo_peer)
    assert done.returncode == 0, done.stderr
    assert "reply: {'text': 'hi'}" in done.stdout and "round trip: median" in done.stdout


def test_worker_pool(state_dir: StateDir) -> None:
    for name in ("coordinator", "worker-0", "worker-1", "worker-2"):
        base = state_dir(name).parent
    done = _run(str(EXAMPLES / "worker_pool.py"), str(base), "12")
    assert done.returncode == 0, done.stderr
    assert "12 jobs done by 3 workers, each after one failed try" in done.stdout


def test_fastapi_gateway(state_dir: StateDir, echo_peer: str) -> None:
    port = free_port()
    env = {**os.environ, "P2PHOST_PROJECT": str(_project(state_dir, "gateway")),
           "P2PHOST_PEER": echo_peer}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "fastapi_gateway:app",
         "--host", "127.0.0.1", "--port", str(port)], env=env, stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=10) as client:
            while True:
                try:
                    answer = client.post("/ask/echo", json={"text": "via http"})
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        pytest.fail(f"the gateway did not start: {server.stderr}")
                    time.sleep(0.1)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"text": "via http"}
            missing = client.post("/ask/nothing", json={})
            assert missing.status_code == 502 and "no app" in missing.json()["detail"]
    finally:
        server.terminate()
        server.wait(30)  # uvicorn ends by re-raising SIGTERM once it shut down cleanly
        log = server.stderr.read() if server.stderr else ""
        assert "Application shutdown complete" in log, log
