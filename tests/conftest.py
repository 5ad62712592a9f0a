"""Shared fixtures: real plugin wheels, real projects on disk, the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from p2phost._environment import PluginEnvironment
from p2phost._wheel import unpack_wheel
from p2phost_sdk import PluginMetadata, PluginMetadataError

# The tests choose their plugin sources themselves: a developer's built-in source is not one.
os.environ.pop("P2PHOST_BUILTIN_DIR", None)

REPO = Path(__file__).resolve().parent.parent
OFFICIAL = REPO / "official-plugins"
FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugins"


def build_wheels(projects: Iterable[Path], out: Path) -> dict[str, Path]:
    """Build one wheel per plugin project (no build isolation: fast) -> {plugin name: wheel}."""
    out.mkdir(parents=True, exist_ok=True)
    projects = list(projects)
    if projects:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(out), *map(str, projects)],
            check=True, env={**os.environ, "PIP_NO_INDEX": "1"},
        )
    wheels: dict[str, Path] = {}
    for wheel in out.glob("*.whl"):
        try:
            name = PluginMetadata.from_wheel(wheel).name  # p2phost-tcp-transport: tcp-transport
        except PluginMetadataError:
            name = wheel.name.split("-")[0].replace("_", "-").lower()
        wheels[name] = wheel
    return wheels


@pytest.fixture(autouse=True)
def _fresh_repeat_limit() -> Iterable[None]:
    """Each test starts with nothing held back by the repeat limit on p2phost's loggers, as
    a new process would: the limit is per process, and one xdist worker runs many tests,
    so warnings a test checks for could be held back for what earlier tests logged."""
    from p2phost._observability import _logs

    _logs._NODE_LIMIT._kinds.clear()
    yield
    _logs._NODE_LIMIT._kinds.clear()


@pytest.fixture(scope="session")
def official_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every official plugin built once per test session, by normalised name."""
    projects = sorted(p for p in OFFICIAL.glob("*") if (p / "pyproject.toml").is_file())
    return build_wheels(projects, tmp_path_factory.mktemp("official-wheels"))


@pytest.fixture(scope="session")
def fixture_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test plugins under tests/fixtures/plugins, built once per session."""
    projects = sorted(p for p in FIXTURE_PLUGINS.glob("*") if (p / "pyproject.toml").is_file())
    return build_wheels(projects, tmp_path_factory.mktemp("fixture-wheels"))


def write_project(
    root: Path,
    plugins: Mapping[str, str] | Iterable[str],
    *,
    wheels: Iterable[Path] = (),
    listen: Iterable[str] = ("tcp://127.0.0.1:0",),
    config: Mapping[str, Mapping[str, Any]] | None = None,
    name: str | None = None,
    registry: str | None = None,
) -> Path:
    """A project at ``root``: p2phost.toml declaring ``plugins``, ``wheels`` installed."""
    root.mkdir(parents=True, exist_ok=True)
    if not isinstance(plugins, Mapping):
        plugins = {p: "*" for p in plugins}
    doc: dict[str, Any] = {"node": {"name": name or root.name, "listen": list(listen)}}
    if registry:
        doc["registry"] = {"url": registry}
    doc["plugins"] = dict(plugins)
    if config:
        doc["config"] = {k: dict(v) for k, v in config.items()}
    (root / "p2phost.toml").write_text(tomlkit.dumps(doc), encoding="utf-8")
    wheels = list(wheels)
    if wheels:
        env = PluginEnvironment(root / ".p2phost")
        staged = env.stage()
        for wheel in wheels:
            unpack_wheel(wheel, staged)
        env.commit(staged)
    return root


@pytest.fixture
def make_project(
    tmp_path: Path, official_wheels: dict[str, Path]
) -> Callable[..., Path]:
    """``make_project(plugins, name=..., listen=..., config=..., extra_wheels=...)``.

    Installs the official wheels of the named plugins (and ``extra_wheels``) into a new
    project under tmp_path and returns its root.
    """
    def make(plugins: Mapping[str, str] | Iterable[str], *, name: str = "node",
             extra_wheels: Iterable[Path] = (), **kwargs: Any) -> Path:
        names = list(plugins)
        wheels = [official_wheels[n] for n in names if n in official_wheels]
        return write_project(tmp_path / name, plugins, name=name,
                             wheels=[*wheels, *extra_wheels], **kwargs)
    return make


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 60,
            check: bool = False, env: Mapping[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``p2phost ARGS`` in a real subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "p2phost", *args], cwd=cwd, timeout=timeout, check=check,
        capture_output=True, text=True, env={**os.environ, **(env or {})}, input=input,
    )


def service_or_skip(name: str, port: int) -> None:
    """Skip (fail under CI=true) when the loopback service on ``port`` is down."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        message = f"{name} is not running on 127.0.0.1:{port} (start it: scripts/services.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


class RunningRegistry:
    """A real ``p2phost registry serve`` process on a free loopback port."""

    def __init__(self, url: str, data: Path, process: subprocess.Popen[str]) -> None:
        self.url, self.data, self.process = url, data, process

    def token(self, owner: str = "p2phost") -> str:
        """A new publishing token of ``owner`` (the seeded plugins' owner by default)."""
        out = run_cli("registry", "token", "create", "--data", str(self.data),
                      "--owner", owner, check=True).stdout
        return out.split()[-1]

    def yank(self, name: str, version: str, reason: str) -> None:
        """Yank a release through the JSON API, as its owner would."""
        import json
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}/api/v1/plugins/{name}/{version}/yank", method="POST",
            data=json.dumps({"reason": reason}).encode(),
            headers={"Authorization": f"Bearer {self.token()}",
                     "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()


def start_registry(data: Path, projects: Iterable[Path] = ()) -> RunningRegistry:
    """Seed ``projects`` into a store at ``data`` and serve it; stop it with ``stop_registry``."""
    import selectors
    import time

    projects = list(projects)
    if projects:
        run_cli("registry", "seed", "--data", str(data), *map(str, projects), check=True,
                timeout=120)
    process = subprocess.Popen(
        [sys.executable, "-m", "p2phost", "registry", "serve", "--port", "0", "--create",
         "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=0.5):
                line = process.stdout.readline()
                if "listening on" in line:
                    return RunningRegistry(line.split()[-1].rstrip("/"), data, process)
    process.kill()
    raise RuntimeError(f"the registry did not start: {process.stdout.read()}")


def stop_registry(registry: RunningRegistry) -> None:
    """Stop a registry started by ``start_registry``, waiting for it to exit."""
    registry.process.terminate()
    try:
        registry.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        registry.process.kill()
        registry.process.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterable[RunningRegistry]:
    """A real registry seeded with the installer's test plugins (tests/install/_projects.py)."""
    from tests.install._projects import YANKED, write_projects

    root = tmp_path_factory.mktemp("registry")
    running = start_registry(root / "data", write_projects(root / "projects"))
    try:
        for name, version, reason in YANKED:
            running.yank(name, version, reason)
        yield running
    finally:
        stop_registry(running)
