"""A generated plugin project is developed outside this checkout, as its README says.

For each kind: ``plugin new``; then a clean venv where the project is installed with its
``test`` extra, and its tests run; then another clean venv where the run steps of its CI
workflow are executed in order (install, pytest, ``plugin check``, ``plugin build``).

Where packages come from, honestly: pip's configuration is the null device; its only
index is the test registry's ``/simple/`` (``scripts/dist`` built p2phost-sdk and p2phost,
``registry seed`` put them there), and a wheelhouse stands in for PyPI for third-party
packages (pytest, hatchling, httpx...). The wheelhouse holds no p2phost distribution, so
those can only come from the registry. ``scripts/test`` fills it before pytest runs
(``scripts/_wheelhouse.py``, set-up like the dev tools), so these tests reach only loopback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2phost._keys import create_key
from scripts import _wheelhouse
from tests.conftest import REPO, RunningRegistry, run_cli, start_registry, stop_registry

from .conftest import KINDS, plugin_name

# Builds every distribution once, then makes two venvs per kind: minutes, not seconds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """Third-party wheels (no p2phost distribution), filled by ``scripts/test``."""
    folder = _wheelhouse.folder()
    if not (folder / ".complete").exists():
        message = (f"no wheelhouse at {folder}: run ./scripts/test, which fills it "
                   "(or python scripts/_wheelhouse.py)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry seeded as a project's maintainers seed theirs: ``scripts/dist`` builds the
    distributions, ``registry seed`` publishes the built-in folder (the official plugins and
    p2phost-sdk) and p2phost's wheel."""
    root = tmp_path_factory.mktemp("seeded-registry")
    key = root / "release.key"
    create_key(key)
    out = root / "dist"
    script = REPO / "scripts" / "_dist.py"
    built = subprocess.run([sys.executable, str(script), "--out", str(out)],
                           capture_output=True, text=True, timeout=900,
                           env={**os.environ, "P2PHOST_RELEASE_KEY": str(key)})
    assert built.returncode == 0, built.stdout + built.stderr
    (host,) = out.glob("p2phost-*.whl")
    seed = run_cli("registry", "seed", "--data", str(root / "data"), str(out / "plugins"),
                   str(host), timeout=600)
    assert seed.returncode == 0, seed.stdout + seed.stderr
    running = start_registry(root / "data")
    try:
        yield running
    finally:
        stop_registry(running)


def _simple_has(registry: RunningRegistry, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"{registry.url}/simple/{name}/", timeout=10) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError:
        return False


def _clean_env(venv: Path, registry: RunningRegistry, wheelhouse: Path) -> dict[str, str]:
    """A shell where ``python`` and ``p2phost`` are the venv's, and pip sees only what we say."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "PYTHON", "VIRTUAL_ENV", "P2PHOST_"))}
    index = f"{registry.url}/simple/"
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
               VIRTUAL_ENV=str(venv), PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index,
               PIP_FIND_LINKS=str(wheelhouse), PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONDONTWRITEBYTECODE="1", P2PHOST_INDEX_URL=index)
    return env


def _venv(path: Path) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True, timeout=120)
    return path


def _sh(command: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def run_steps(workflow: str) -> list[str]:
    """The ``run:`` commands of a workflow, in order (the template keeps each on one line)."""
    steps = []
    for line in workflow.splitlines():
        text = line.strip().removeprefix("- ").strip()
        if text.startswith("run:"):
            steps.append(text.removeprefix("run:").strip())
    return steps


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_plugin_is_developed_and_checked_in_clean_venvs(
        kind: str, tmp_path: Path, seeded: RunningRegistry, wheelhouse: Path) -> None:
    assert _simple_has(seeded, "p2phost-sdk"), "registry seed did not put p2phost-sdk on /simple/"
    project = tmp_path / plugin_name(kind)
    made = run_cli("plugin", "new", kind, plugin_name(kind), "--no-input", "--dir", str(project))
    assert made.returncode == 0, made.stderr

    # The test extra alone runs the tests: p2phost-sdk[testing] from the registry (and, for
    # an app, the host its kit runs apps on).
    venv = _venv(tmp_path / "venv-test")
    env = _clean_env(venv, seeded, wheelhouse)
    _sh('python -m pip install -q -e ".[test]"', project, env)
    has_host = subprocess.run([str(venv / "bin" / "python"), "-c", "import p2phost"],
                              env=env, capture_output=True).returncode == 0
    assert has_host == (kind == "app")
    out = _sh("python -m pytest -q -p no:cacheprovider", project, env)
    assert " passed" in out and "failed" not in out

    # The CI workflow, step by step, in another clean venv.
    workflow = (project / ".github/workflows/ci.yml").read_text()
    assert "P2PHOST_INDEX_URL: ${{ vars.P2PHOST_INDEX_URL }}" in workflow
    steps = run_steps(workflow)
    assert any("pytest" in s for s in steps) and "p2phost plugin check" in steps
    # p2phost's distributions come from the registry alone, first: never --extra-index-url,
    # with which a higher version on another index would win.
    pip_steps = [s for s in steps if "pip install" in s]
    assert '--index-url "$P2PHOST_INDEX_URL" --no-deps' in pip_steps[0]
    assert not any("--extra-index-url" in s for s in steps)
    ci = _clean_env(_venv(tmp_path / "venv-ci"), seeded, wheelhouse)
    outputs = [_sh(step, project, ci) for step in steps]
    check = outputs[steps.index("p2phost plugin check")]
    assert f"✓ {kind} conformance kit:" in check and "check passed" in check
    built = sorted(p.name for p in (project / "dist").iterdir())
    stem = f"p2phost_{plugin_name(kind).replace('-', '_')}-1.0.0"
    assert built == [f"{stem}-py3-none-any.whl", f"{stem}.tar.gz"], built
    assert shlex.split(steps[0])[:3] == ["python", "-m", "pip"]
