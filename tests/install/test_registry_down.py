"""A configured registry that is down, or unavailable behind its proxy (503), must not
block the official plugins, which the built-in source ships; but ``--refresh``, which asks
for the registries' answers, must say it could not have them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2phost._lock import Lock
from tests.install.conftest import Workspace, hand_made_registry

Make = Callable[..., Workspace]


@pytest.fixture
def unavailable() -> Iterator[str]:
    """A registry's proxy that answers 503 to everything (the registry behind it is down)."""
    with hand_made_registry({}, missing=503) as url:
        yield url


def _configured(ws: Workspace, url: str) -> None:
    (ws.root / "p2phost.toml").write_text(f'[registry]\nurl = "{url}"\n\n' + ws.manifest)


@pytest.mark.parametrize("down", ["refused", "503"])
def test_built_in_plugins_install_with_the_configured_registry_down(
        workspace: Make, builtin_plugins: Path, unavailable: str, down: str) -> None:
    ws = workspace(plugins={"echo": "*"})
    url = "http://127.0.0.1:9" if down == "refused" else unavailable  # 9: nothing listens
    _configured(ws, url)
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins),
           "P2PHOST_TIMEOUT": "2"}
    done = ws.cli("plugin", "install", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert f"warning: {url} did not answer" in done.stderr
    assert "fix: start that registry, or remove it from [registry] url in p2phost.toml" \
        in done.stderr
    assert 'source = "built-in"' in ws.lock and "echo" in ws.installed()

    # The lock now satisfies the manifest; --refresh must still ask, and say it could not.
    for replay in ("1", "0"):
        refreshed = ws.cli("plugin", "install", "--yes", "--refresh",
                           env={**env, "P2PHOST_REPLAY": replay})
        assert refreshed.returncode != 0, refreshed.stdout + refreshed.stderr
        assert refreshed.stderr.startswith(f"error: a refresh must ask {url}, and it did not "
                                           "answer"), \
            refreshed.stderr
        assert "\nfix: start that registry" in refreshed.stderr
        assert "nothing to do" not in refreshed.stdout


def test_a_fresh_clone_installs_with_its_registry_down_and_keeps_the_lock(
        workspace: Make, builtin_plugins: Path, tmp_path: Path) -> None:
    ws = workspace(plugins={"echo": "*"})
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins),
           "P2PHOST_TIMEOUT": "2"}
    assert ws.cli("plugin", "install", "--yes", env=env).returncode == 0
    # The lock a teammate committed: the same files, locked from their registry (now down).
    url = "http://127.0.0.1:9"
    lock = ws.lock.replace('source = "built-in"\n',
                           f'source = "{url}"\n').replace(
        'filename = "', f'url = "{url}/files/x.whl"\nfilename = "')
    assert lock != ws.lock
    (ws.root / "p2phost.lock").write_text(lock)
    Lock.load(ws.root / "p2phost.lock").save(ws.root / "p2phost.lock")  # as p2phost writes
    lock = ws.lock
    _configured(ws, url)

    shutil.rmtree(ws.root / ".p2phost")  # a fresh clone, and an empty download cache
    done = ws.cli("plugin", "install", "--yes",
                  env={**env, "P2PHOST_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert done.returncode == 0, done.stderr
    assert "nothing to do" not in done.stdout
    assert f"installed 1 plugin(s): echo 1.0.0 (from the built-in source: {url} did not " \
        "answer)" in done.stdout
    assert ws.lock == lock and "echo" in ws.installed()


@pytest.mark.parametrize("where", ["option", "env", "manifest"])
def test_a_malformed_registry_url_is_refused_not_taken_for_a_down_one(
        workspace: Make, builtin_plugins: Path, where: str) -> None:
    ws = workspace(plugins={"echo": "*"})
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins),
           "P2PHOST_TIMEOUT": "2"}
    args = ["plugin", "install", "--yes"]
    if where == "option":
        args += ["--registry", "127.0.0.1:18470"]
    elif where == "env":
        env["P2PHOST_REGISTRY"] = "htp://127.0.0.1:18470"
    else:
        _configured(ws, "http://127.0.0.1:PORT")
    done = ws.cli(*args, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "did not answer" not in done.stderr and "echo" not in ws.installed()
    assert "is not a registry URL" in done.stderr or "expected an http(s) URL" in done.stderr
    assert "fix: write it as" in done.stderr and "http://HOST:PORT" in done.stderr


def test_a_typo_with_the_registry_down_suggests_a_built_in_name(
        workspace: Make, builtin_plugins: Path) -> None:
    ws = workspace(plugins={"echo": "*"})
    _configured(ws, "http://127.0.0.1:9")
    env = {"P2PHOST_REGISTRY": "", "P2PHOST_BUILTIN_DIR": str(builtin_plugins),
           "P2PHOST_TIMEOUT": "2"}
    error = ws.fails("plugin", "install", "tcp-transprt", "--yes", env=env)
    assert "did not answer" in error and "did you mean 'tcp-transport'?" in error
    assert "fix: p2phost plugin install tcp-transport (the built-in source has it)" in error, error
