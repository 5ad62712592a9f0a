"""A lock edited by hand (a plugin's sha256 changed, a declared plugin's entry dropped) is
reported by ``run --check`` and ``doctor``, and the fix they give repairs it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.install.conftest import Workspace

Make = Callable[..., Workspace]


def _installed(workspace: Make, builtin_plugins: Path) -> tuple[Workspace, dict[str, str]]:
    ws = workspace(plugins={"echo": "*", "tcp-transport": "*"})
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins)}
    done = ws.cli("plugin", "install", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    return ws, env


def _echo_sha(lock: str) -> str:
    found = re.search(r'name = "echo"\n(?:.*\n)*?sha256 = "([0-9a-f]{64})"', lock)
    assert found, lock
    return found.group(1)


@pytest.mark.parametrize("fix", [("plugin", "install", "echo", "--yes"),
                                 ("plugin", "install", "--yes")])
def test_an_edited_sha256_is_reported_and_the_fix_repairs_it(
        workspace: Make, builtin_plugins: Path, fix: tuple[str, ...]) -> None:
    ws, env = _installed(workspace, builtin_plugins)
    good = _echo_sha(ws.lock)
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    (ws.root / "p2phost.lock").write_text(ws.lock.replace(good, bad))

    check = ws.cli("run", "--check", env=env)
    assert check.returncode != 0, check.stdout
    assert "p2phost.lock gives echo" in check.stderr and "edited or replaced" in check.stderr
    assert "fix: restore p2phost.lock from version control, or p2phost plugin install echo " \
        "--yes" in check.stderr
    doctor = ws.cli("doctor", env=env)
    assert doctor.returncode != 0 and "no problems found" not in doctor.stdout
    assert "p2phost.lock gives echo" in doctor.stdout
    synced = ws.cli("plugin", "sync", env=env)
    assert synced.returncode != 0 and "does not verify" in synced.stderr
    assert "p2phost plugin install echo --yes" in synced.stderr

    repaired = ws.cli(*fix, env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert _echo_sha(ws.lock) == good
    assert ws.cli("run", "--check", env=env).returncode == 0
    assert ws.cli("plugin", "sync", env=env).returncode == 0


def test_a_lock_missing_a_declared_plugin_is_reported_and_install_repairs_it(
        workspace: Make, builtin_plugins: Path) -> None:
    ws, env = _installed(workspace, builtin_plugins)
    lock = ws.lock
    start = lock.index('[[plugin]]\nname = "echo"')
    end = lock.find("[[", start + 2)
    (ws.root / "p2phost.lock").write_text(lock[:start] + (lock[end:] if end > 0 else ""))

    check = ws.cli("run", "--check", env=env)
    assert check.returncode != 0, check.stdout
    assert "echo is declared in p2phost.toml but has no entry in p2phost.lock" in check.stderr
    assert "fix: p2phost plugin install --yes" in check.stderr
    doctor = ws.cli("doctor", env=env)
    assert doctor.returncode != 0 and "has no entry in p2phost.lock" in doctor.stdout

    assert ws.cli("plugin", "install", "--yes", env=env).returncode == 0
    assert ws.lock == lock
    assert ws.cli("run", "--check", env=env).returncode == 0
