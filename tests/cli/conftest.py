"""A registry seeded with the official plugins a default project declares, shared by the
CLI tests (the tour, the scheme fixes, --json)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL, RunningRegistry, run_cli, start_registry, stop_registry

#: What ``p2phost init`` declares, and what the README tour adds.
TOUR_PLUGINS = ("tcp-transport", "noise-security", "json-codec", "static-discovery", "echo",
                "chat", "memory-transport", "tls-security", "msgpack-codec", "relay")


@pytest.fixture(scope="session")
def official_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A real registry process seeded with ``TOUR_PLUGINS``."""
    root = tmp_path_factory.mktemp("cli-registry")
    running = start_registry(root / "data", [OFFICIAL / name for name in TOUR_PLUGINS])
    try:
        yield running
    finally:
        stop_registry(running)


def cli_env(registry: RunningRegistry, cache: Path) -> dict[str, str]:
    """The environment of a user whose plugins come from ``registry``."""
    return {"P2PHOST_REGISTRY": registry.url, "P2PHOST_CACHE_DIR": str(cache)}


def new_project(root: Path, registry: RunningRegistry, *extra: str) -> Path:
    """``p2phost init`` + ``plugin install --yes`` (and ``extra`` plugins) at ``root``."""
    env = cli_env(registry, root.parent / "cache")
    run_cli("init", str(root), "--listen", "tcp://127.0.0.1:0", check=True)
    done = run_cli("plugin", "install", "--yes", *extra, cwd=root, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@contextmanager
def running_node(root: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``p2phost run`` in ``root`` until the block ends; yields its first listen address."""
    process = subprocess.Popen([sys.executable, "-m", "p2phost", "run"], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # A thread owns the pipe: selecting on a buffered text stream misses buffered lines.
    reader = threading.Thread(target=lambda: [lines.put(li) for li in process.stdout or ()],
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            seen.append(line)
            if line.startswith("listening on "):
                yield line.split()[-1]
                return
        raise AssertionError(f"the node did not start: {''.join(seen)}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
