"""The distributions built once per session by scripts/dist, and fresh venvs installed from them.

Venvs are made with uv (offline: dependencies come from uv's cache, p2phost's own
distributions from the built folder), as a user would install with pip, never editable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from p2phost._keys import create_key, public_key_of
from tests.conftest import REPO

#: The variables that would point a user's p2phost at the checkout or at a registry.
_UNSET = ("P2PHOST_REGISTRY", "P2PHOST_BUILTIN_DIR", "PYTHONPATH", "VIRTUAL_ENV")


class Built:
    """A folder scripts/dist built into, and the release key it signed with."""

    def __init__(self, root: Path, release_key: str, key_file: Path) -> None:
        self.root, self.release_key, self.key_file = root, release_key, key_file

    @property
    def plugins(self) -> Path:
        """The built-in source folder (also inside the p2phost wheel)."""
        return self.root / "plugins"


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Every distribution, built once, signed with a release key made for the session."""
    root = tmp_path_factory.mktemp("dist")
    key = root.parent / f"{root.name}-release.key"
    identity = create_key(key)
    subprocess.run([sys.executable, str(REPO / "scripts" / "_dist.py"), "--out", str(root)],
                   check=True, capture_output=True, text=True, timeout=600,
                   env={**os.environ, "P2PHOST_RELEASE_KEY": str(key)})
    return Built(root, public_key_of(identity), key)


class Venv:
    """A fresh virtual environment and the commands installed in it."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home = root, home

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.root / "bin" / "python"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A user's environment: this venv first, no registry, its own download cache."""
        env = {k: v for k, v in os.environ.items() if k not in _UNSET}
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["P2PHOST_CACHE_DIR"] = str(self.home / "cache")
        return {**env, **(extra or {})}

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run one of the venv's commands (``p2phost``, ``python``...)."""
        return subprocess.run([str(self.root / "bin" / args[0]), *args[1:]], cwd=cwd or self.home,
                              capture_output=True, text=True, timeout=timeout,
                              env=self.env(env))

    def p2phost(self, *args: str, cwd: Path | None = None,
                env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``p2phost ARGS`` of this venv."""
        return self.run("p2phost", *args, cwd=cwd, env=env)


def make_venv(root: Path, built: Built, *requirements: str) -> Venv:
    """A new venv at ``root`` with ``requirements`` installed from ``built`` (and uv's cache)."""
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(root / "venv")],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*uv, "pip", "install", "-q", "--offline", "--compile-bytecode", "--python",
                    str(root / "venv" / "bin" / "python"), "--find-links", str(built.root),
                    "--find-links", str(built.plugins), *requirements],
                   check=True, capture_output=True, timeout=300)
    (root / "home").mkdir()
    return Venv(root / "venv", root / "home")


@pytest.fixture(scope="session")
def node_venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv with only ``p2phost`` installed from the built wheels."""
    return make_venv(tmp_path_factory.mktemp("node-venv"), built, "p2phost")


class RunningNode:
    """A ``p2phost run`` process and the address it printed."""

    def __init__(self, process: subprocess.Popen[str], address: str, log: Path) -> None:
        self.process, self.address, self.log = process, address, log

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def run_node() -> Iterator[object]:
    """``run_node(venv, project)``: start ``p2phost run``; every node is stopped at the end."""
    nodes: list[RunningNode] = []

    def start(venv: Venv, project: Path) -> RunningNode:
        log = project / "node.log"
        with log.open("w") as out:
            process = subprocess.Popen([str(venv.root / "bin" / "p2phost"), "run"], cwd=project,
                                       stdout=out, stderr=subprocess.STDOUT, text=True,
                                       env=venv.env())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            for word in log.read_text().split():
                if word.startswith("tcp://"):
                    node = RunningNode(process, word, log)
                    nodes.append(node)
                    return node
            time.sleep(0.1)
        process.kill()
        raise AssertionError(f"the node did not start: {log.read_text()}")

    yield start
    for node in nodes:
        node.process.terminate()
        try:
            node.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


def copy_builtin(venv: Venv, to: Path) -> Path:
    """A copy of the built-in source inside the venv's p2phost (to break on purpose)."""
    found = venv.run("python", "-c", "import p2phost, pathlib; "
                     "print(pathlib.Path(p2phost.__file__).parent / '_builtin')")
    shutil.copytree(Path(found.stdout.strip()), to)
    return to
