"""Nodes opened by programs: one plugin environment built once per session, shared (by a
symlink) by every node's state directory, so tests can open many nodes cheaply."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from p2phost._environment import PluginEnvironment
from p2phost._wheel import unpack_wheel
from tests.conftest import OFFICIAL, build_wheels

#: The official plugins these tests' manifests declare.
PLUGINS = ("memory-transport", "tcp-transport", "json-codec", "msgpack-codec",
           "noise-security", "redis-transport", "echo")


@pytest.fixture(scope="session")
def shared_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``.p2phost/env`` with the official plugins of :data:`PLUGINS` installed."""
    wheels = build_wheels([OFFICIAL / name for name in PLUGINS],
                          tmp_path_factory.mktemp("library-wheels"))
    state = tmp_path_factory.mktemp("library-env") / ".p2phost"
    env = PluginEnvironment(state)
    staged = env.stage()
    for wheel in wheels.values():
        unpack_wheel(wheel, staged)
    env.commit(staged)
    return env.root


StateDir = Callable[[str], Path]


@pytest.fixture
def state_dir(tmp_path: Path, shared_env: Path) -> StateDir:
    """``state_dir(name)``: a new state directory whose plugin environment is the shared one."""
    def make(name: str) -> Path:
        root = tmp_path / name
        (root / ".p2phost").mkdir(parents=True)
        (root / ".p2phost" / "env").symlink_to(shared_env, target_is_directory=True)
        return root
    return make


def mem_address() -> str:
    """A memory-transport address no other test uses."""
    return f"mem://lib-{uuid.uuid4().hex[:12]}"


def manifest(listen: Iterable[str] = (), *, plugins: Iterable[str] = ("memory-transport",
             "json-codec"), name: str = "node", **tables: Any) -> dict[str, Any]:
    """A manifest mapping for ``open_node(manifest=...)``."""
    return {"node": {"name": name, "listen": list(listen)},
            "plugins": {p: "*" for p in plugins}, **tables}
