"""One manifest, one lock, whatever the host's venv happens to hold; gaps found and repaired.

Two real venvs run p2phost (the checkout's, through a ``.pth``): one also has the
codec's own dependency (tinycbor) installed, the other does not. Plugins' Python
requirements are resolved in isolation from that, so both write the same bytes.

No package index is used: pip sees only a wheelhouse with tinycbor, built here
(``PIP_CONFIG_FILE`` is the null device, ``PIP_NO_INDEX`` is set), and the test registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2phost._environment import PluginEnvironment
from tests.conftest import RunningRegistry, build_wheels

MANIFEST = """\
[node]
name = "{name}"
listen = ["tcp://127.0.0.1:0"]

[plugins]
cbor-codec = ">=1.0,<2"
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinycbor 1.0.0, a third-party package the codec requires, as the only wheel pip sees."""
    root = tmp_path_factory.mktemp("tinycbor")
    (root / "tinycbor").mkdir()
    (root / "tinycbor" / "__init__.py").write_text(
        '"""Stands in for a third-party package from PyPI."""\n\n'
        "def dumps(value: int) -> bytes:\n    return bytes([value])\n")
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "tinycbor"
        version = "1.0.0"
        """))
    out = tmp_path_factory.mktemp("wheelhouse")
    build_wheels([root], out)
    return out


@dataclass
class Venv:
    """A venv that runs this checkout's p2phost; anything installed here is its own."""

    root: Path
    wheelhouse: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def env(self, cache: Path, registry: str) -> dict[str, str]:
        return {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": str(self.wheelhouse), "P2PHOST_CACHE_DIR": str(cache),
                "P2PHOST_REGISTRY": registry, "VIRTUAL_ENV": str(self.root)}

    def run(self, *args: str, cwd: Path, cache: Path, registry: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.python, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=120, env=self.env(cache, registry))


def make_venv(root: Path, wheelhouse: Path) -> Venv:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=60)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(root / "bin" / "python"), "-c", purelib], check=True,
                               capture_output=True, text=True).stdout.strip())
    # After the venv's own site-packages: p2phost, its requirements and pip, from this checkout.
    dev_site = sysconfig.get_path("purelib")
    (site / "zz_p2phost_checkout.pth").write_text(f"import site; site.addsitedir({dev_site!r})\n")
    return Venv(root, wheelhouse)


@dataclass
class Node:
    """A project run by one venv's p2phost."""

    venv: Venv
    root: Path
    cache: Path
    registry: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.venv.run("-m", "p2phost", *args, cwd=self.root, cache=self.cache,
                             registry=self.registry)

    def ok(self, *args: str) -> str:
        done = self.cli(*args)
        assert done.returncode == 0, f"p2phost {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def healthy(self) -> bool:
        """doctor finds nothing missing and the codec loads (the manifest has no transport,
        which doctor also reports: that is not what this test is about)."""
        out = self.cli("doctor").stdout
        failures = [line for line in out.splitlines() if line.startswith("FAIL")]
        return "plugins load: cbor-codec 1.0.0" in out and not any(
            "tinycbor" in line or "p2phost.lock" in line for line in failures)

    @property
    def lock(self) -> bytes:
        return (self.root / "p2phost.lock").read_bytes()

    @property
    def env(self) -> PluginEnvironment:
        return PluginEnvironment(self.root / ".p2phost")


def make_node(tmp_path: Path, name: str, venv: Venv, registry: RunningRegistry) -> Node:
    root = tmp_path / name
    root.mkdir()
    (root / "p2phost.toml").write_text(MANIFEST.format(name=name))
    return Node(venv, root, tmp_path / f"{name}-cache", registry.url)


def uninstall(env: PluginEnvironment, name: str) -> None:
    """Remove a distribution from the plugin environment file by file, as pip would."""
    dist = env.installed()[name]
    paths = [Path(str(dist.locate_file(file))) for file in dist.files or ()]
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in sorted({p.parent for p in paths}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def test_the_lock_ignores_what_the_hosts_venv_holds_and_sync_repairs_gaps(
        tmp_path: Path, registry: RunningRegistry, wheelhouse: Path) -> None:
    bare = make_venv(tmp_path / "venv-bare", wheelhouse)
    fed = make_venv(tmp_path / "venv-fed", wheelhouse)
    subprocess.run([fed.python, "-m", "pip", "install", "-q", "tinycbor"], check=True,
                   env=fed.env(tmp_path / "pip-cache", registry.url), timeout=120)
    probe = "import tinycbor"
    assert subprocess.run([fed.python, "-c", probe], capture_output=True).returncode == 0
    assert subprocess.run([bare.python, "-c", probe], capture_output=True).returncode != 0

    a = make_node(tmp_path, "a", fed, registry)
    b = make_node(tmp_path, "b", bare, registry)
    for node in (a, b):
        node.ok("plugin", "install", "--yes")
    assert a.lock == b.lock  # byte for byte
    lock = tomllib.loads(b.lock.decode())
    assert [(p["name"], p["version"]) for p in lock["package"]] == [("tinycbor", "1.0.0")]
    assert set(a.env.installed()) == set(b.env.installed()) == {"cbor-codec", "tinycbor"}

    # The host's copy goes away: node a does not notice, its plugins have their own.
    subprocess.run([fed.python, "-m", "pip", "uninstall", "-q", "-y", "tinycbor"], check=True,
                   env=fed.env(tmp_path / "pip-cache", registry.url), timeout=60)
    assert a.healthy()

    # The plugin environment's copy goes away: doctor names it, sync puts it back.
    uninstall(b.env, "tinycbor")
    done = b.cli("doctor")
    assert done.returncode == 1, done.stdout
    assert "tinycbor 1.0.0 is in p2phost.lock but not in the plugin environment" in done.stdout
    assert "fix: p2phost plugin sync" in done.stdout
    assert "+ tinycbor 1.0.0" in b.ok("plugin", "sync")
    assert b.healthy()
    assert "nothing to do" in b.ok("plugin", "sync")

    # Half of it goes away (its metadata stays): still found, still repaired.
    site = b.env.site_dir
    assert site is not None
    (site / "tinycbor" / "__init__.py").unlink()
    done = b.cli("doctor")
    assert done.returncode == 1 and "tinycbor 1.0.0 in the plugin environment lacks " \
        "tinycbor/__init__.py" in done.stdout, done.stdout
    assert "+ tinycbor 1.0.0" in b.ok("plugin", "sync")
    repaired = b.env.site_dir
    assert repaired is not None and (repaired / "tinycbor" / "__init__.py").is_file()

    # A lock written by a host that left tinycbor to its own venv (as p2phost once did):
    # doctor says the lock lacks it, sync locks it again and installs it.
    text = b.lock.decode()
    gappy = text[:text.index("[[package]]")].rstrip() + "\n"
    (b.root / "p2phost.lock").write_text(gappy)
    uninstall(b.env, "tinycbor")
    done = b.cli("doctor")
    assert done.returncode == 1, done.stdout
    assert "p2phost.lock has no tinycbor that fits (cbor-codec 1.0.0 needs tinycbor>=1)" \
        in done.stdout
    assert "+ tinycbor 1.0.0" in b.ok("plugin", "sync")
    assert b.lock == a.lock
    assert b.healthy()
    assert "nothing to do" in b.ok("plugin", "sync")
