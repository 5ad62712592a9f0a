"""Signed-plugin fixtures: a real registry, real built wheels, publisher keys made by the CLI."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import build_wheels, run_cli
from tests.install._projects import Spec, write_projects
from tests.install.conftest import MANIFEST, Workspace
from tests.registry.conftest import Registry, start_registry

#: The plugins these tests publish; each test uses its own names, so none sees another's state.
SPECS = tuple(
    Spec(name, version)
    for name, versions in {
        "inked": ("1.0.0", "1.1.0", "1.2.0"),
        "turncoat": ("1.0.0", "1.1.0"),
        "plain": ("1.0.0",),
        "doctored": ("1.0.0",),
        "forged": ("1.0.0",),
        "kept": ("1.0.0",),
    }.items()
    for version in versions
)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every spec built once: (name, version) -> wheel."""
    root = tmp_path_factory.mktemp("signing-wheels")
    projects = write_projects(root / "src", SPECS)
    # pip builds one version of a name per run: one run per version.
    for version in sorted({s.version for s in SPECS}):
        build_wheels([p for p, s in zip(projects, SPECS, strict=True) if s.version == version],
                     root / "dist")
    return {(s.name, s.version): root / "dist" / f"{s.name}-{s.version}-py3-none-any.whl"
            for s in SPECS}


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An empty registry on SQLite for this module's tests."""
    server = start_registry(tmp_path_factory.mktemp("signing-registry"))
    yield server
    server.stop()


@dataclass
class Publisher:
    """An owner on the registry with a token and a key file made by ``p2phost key new``."""

    owner: str
    token: str
    key: Path
    registry: Registry

    @property
    def public_key(self) -> str:
        """``p2phost key show`` of the key file."""
        return public_key(self.key)

    def publish(self, wheel: Path, *, sign: bool = True,
                key: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``p2phost plugin publish WHEEL [--sign --key KEY]``; the finished process."""
        args = ["plugin", "publish", str(wheel), "--registry", self.registry.url,
                "--token", self.token]
        if sign:
            args += ["--sign", "--key", str(key or self.key)]
        return run_cli(*args)

    def published(self, wheel: Path, **kwargs: object) -> str:
        """Publish and insist it worked; the output."""
        done = self.publish(wheel, **kwargs)  # type: ignore[arg-type]
        assert done.returncode == 0, f"{shlex.join(done.args)}:\n{done.stdout}{done.stderr}"
        return done.stdout


def public_key(path: Path) -> str:
    """``p2phost key show --key PATH``."""
    return run_cli("key", "show", "--key", str(path), check=True).stdout.strip()


def new_key(path: Path) -> Path:
    """A publisher key file made by ``p2phost key new --out PATH``."""
    run_cli("key", "new", "--out", str(path), check=True)
    return path


@pytest.fixture
def publisher(tmp_path: Path, registry_server: Registry) -> Callable[[str], Publisher]:
    """``publisher(owner)``: a token of ``owner`` (no scope) and a fresh key of theirs.

    The registry lives for the module and remembers each owner's key: one owner per test.
    """
    def make(owner: str) -> Publisher:
        key = new_key(tmp_path / f"{owner}.key")
        return Publisher(owner, registry_server.token(owner), key, registry_server)
    return make


@pytest.fixture
def project(tmp_path: Path, registry_server: Registry) -> Callable[..., Workspace]:
    """``project(name, plugins={...}, extra="")``: a p2phost project using the registry."""
    def make(name: str = "proj", plugins: dict[str, str] | None = None,
             extra: str = "") -> Workspace:
        root = tmp_path / name
        root.mkdir()
        lines = "\n".join(f'{n} = "{s}"' for n, s in (plugins or {}).items())
        (root / "p2phost.toml").write_text(MANIFEST.format(name=name, plugins=lines) + extra)
        return Workspace(root, registry_server.url, tmp_path / "cache")
    return make
