"""A registry seeded with the official plugins a default project declares, shared by the
CLI tests (the tour, the scheme fixes, --json)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL, RunningRegistry, run_cli, start_registry, stop_registry

#: What ``p2phost init`` declares, and what the README tour adds.
TOUR_PLUGINS = ("tcp-transport", "noise-security", "json-codec", "static-discovery", "echo",
                "chat", "memory-transport", "tls-security")


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
