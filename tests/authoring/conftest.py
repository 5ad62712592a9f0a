"""Plugin projects generated once per session, and a real registry to publish them to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL, RunningRegistry, run_cli, start_registry, stop_registry

#: The kinds whose generated projects the end-to-end test takes all the way.
KINDS = ("transport", "codec", "discovery", "security", "app")
#: What a node needs besides the plugin under test (installed from the test registry).
BASE_PLUGINS = ("tcp-transport", "json-codec", "echo")


def plugin_name(kind: str) -> str:
    """The generated plugin of ``kind``."""
    return f"shout-{kind}"


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One project per kind, made by ``p2phost plugin new --no-input`` (read-only for tests)."""
    root = tmp_path_factory.mktemp("generated")
    projects: dict[str, Path] = {}
    for kind in KINDS:
        target = root / plugin_name(kind)
        result = run_cli("plugin", "new", kind, plugin_name(kind), "--no-input",
                         "--set", "author=Ada Lovelace", "--dir", str(target))
        assert result.returncode == 0, result.stderr
        projects[kind] = target
    return projects


@pytest.fixture(scope="session")
def authoring_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A real registry process seeded with the official plugins a node needs."""
    root = tmp_path_factory.mktemp("authoring-registry")
    running = start_registry(root / "data", [OFFICIAL / name for name in BASE_PLUGINS])
    try:
        yield running
    finally:
        stop_registry(running)
