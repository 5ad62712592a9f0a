"""The warm path of ``plugin install --yes`` (``p2phost._replay``): it does and prints what
the full installer does, and anything its record depended on that changed (the manifest,
the lock, a cached wheel, a registry answer gone stale, the environment deleted or left
half-built by a kill) sends the install to the full installer, which does it right.

Which path ran is read from the interpreter's own import log (``PYTHONPROFILEIMPORTTIME``):
the full installer imports ``p2phost._install._installer``, the replay does not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunningRegistry

from .conftest import Workspace
from .test_response_cache import Proxy, proxy_to, through  # noqa: F401 - a fixture

Make = Callable[..., Workspace]
#: Modules a replay must not need: each costs more to import than a replay takes.
HEAVY = (
    "re",
    "json",
    "pathlib",
    "typing",
    "dataclasses",
    "packaging",
    "tomllib",
    "logging",
    "typer",
    "rich",
    "p2phost._install",
    "p2phost_sdk",
)


def install(
    ws: Workspace, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """``p2phost plugin install --yes`` in ``ws``: its result (the import log taken out of
    stderr) and whether the full installer ran."""
    done = ws.cli("plugin", "install", "--yes", env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    lines = done.stderr.splitlines(keepends=True)
    imported = {li.rsplit("|", 1)[1].strip() for li in lines if li.startswith("import time:")}
    done.stderr = "".join(li for li in lines if not li.startswith("import time:"))
    return done, "p2phost._install._installer" in imported


def ok(ws: Workspace, env: dict[str, str] | None = None) -> bool:
    """Install, insist on success; whether the full installer ran."""
    done, full = install(ws, env)
    assert done.returncode == 0, done.stderr
    return full


def generation(ws: Workspace) -> dict[str, int]:
    """Each file of the active generation (byte code aside) and its inode."""
    active = (ws.root / ".p2phost/env/current").resolve()
    return {
        str(p.relative_to(active)): p.stat().st_ino
        for p in active.rglob("*")
        if p.is_file() and p.suffix != ".pyc"
    }


def _projects(workspace: Make, proxy: Proxy) -> Callable[..., Workspace]:
    """``make(name, manifest=None, **workspace_options)``: a project asking through
    ``proxy``, with ``manifest``."""

    def make(name: str, manifest: str | None = None, **kwargs: object) -> Workspace:
        ws = through(workspace(name, **kwargs), proxy)
        if manifest is not None:
            (ws.root / "p2phost.toml").write_text(manifest)
        return ws

    return make


@pytest.fixture
def fresh(
    workspace: Make,
    registry: RunningRegistry,
    proxy_to: Callable[..., Proxy],  # noqa: F811
) -> Callable[..., Workspace]:
    """Projects whose registry answers stay fresh for 10 minutes (the registry's own 10 s
    can pass on a loaded machine)."""
    proxy = proxy_to(registry.url)
    proxy.max_age = 600
    return _projects(workspace, proxy)


@pytest.fixture
def frozen(
    workspace: Make,
    registry: RunningRegistry,
    proxy_to: Callable[..., Proxy],  # noqa: F811
) -> tuple[Proxy, Callable[..., Workspace]]:
    """A frozen proxy (its pages change only when a test changes them, so revalidations
    are answered 304), and projects asking through it."""
    proxy = proxy_to(registry.url, frozen=True)
    return proxy, _projects(workspace, proxy)


def test_a_replay_does_and_prints_what_the_full_installer_does(
    fresh: Callable[..., Workspace],
) -> None:
    first = fresh("first", plugins={"beta": "*"})  # and alpha, which beta requires
    assert ok(first)
    reference = fresh("reference", first.manifest)
    full, ran_full = install(reference, env={"P2PHOST_REPLAY": "0"})
    assert ran_full and full.returncode == 0
    replayed = fresh("replayed", first.manifest)
    done, ran_full = install(replayed)
    assert not ran_full
    assert (done.returncode, done.stdout, done.stderr) == (0, full.stdout, full.stderr)
    assert "installed 2 plugin(s): alpha 1.1.0, beta 1.0.0" in done.stdout
    assert replayed.lock == reference.lock and replayed.manifest == reference.manifest
    assert generation(replayed) == generation(reference)  # the same links to the same files
    assert replayed.installed() == {"alpha": "1.1.0", "beta": "1.0.0"}
    assert "ok   plugins load: alpha 1.1.0, beta 1.0.0" in replayed.cli("doctor").stdout
    # Nothing to do: decided once by the full installer, then replayed.
    noop, ran_full = install(replayed)
    assert ran_full and noop.stdout == "nothing to do: the plugins already match\n"
    again, ran_full = install(replayed)
    assert not ran_full and (again.stdout, again.stderr) == (noop.stdout, noop.stderr)
    assert [p.name for p in (replayed.root / ".p2phost/env").iterdir()] in (
        ["current", "gen-000001"],
        ["gen-000001", "current"],
    )


def test_a_replayed_build_records_what_it_was_built_from(
    fresh: Callable[..., Workspace],
) -> None:
    """As the full installer does (``.p2phost/installed.json``), so that ``doctor`` and
    ``run --check`` see a lock edited after a replayed install."""
    first = fresh("first", plugins={"alpha": "*"})
    assert ok(first)
    reference = fresh("reference", first.manifest)
    assert ok(reference, env={"P2PHOST_REPLAY": "0"})
    replayed = fresh("replayed", first.manifest)
    assert not ok(replayed)
    built = ".p2phost/installed.json"
    assert (replayed.root / built).read_bytes() == (reference.root / built).read_bytes()
    sha = replayed.lock.split('sha256 = "', 1)[1][:64]
    (replayed.root / "p2phost.lock").write_text(replayed.lock.replace(sha, "0" * 64))
    check = replayed.cli("run", "--check")
    assert check.returncode != 0 and "p2phost.lock gives alpha 1.1.0 the sha256" in check.stderr
    assert "fix: restore p2phost.lock from version control, or p2phost plugin install alpha " \
        "--yes" in check.stderr


def test_a_replay_imports_next_to_nothing(fresh: Callable[..., Workspace]) -> None:
    first = fresh("first", plugins={"alpha": "*"})
    assert ok(first)
    second = fresh("second", first.manifest)
    done = second.cli("plugin", "install", "--yes", env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = {
        li.rsplit("|", 1)[1].strip()
        for li in done.stderr.splitlines()
        if li.startswith("import time:")
    }
    assert "installed 1 plugin(s): alpha 1.1.0" in done.stdout
    assert "p2phost._replay" in imported
    assert sorted(m for m in imported for h in HEAVY if m == h or m.startswith(h + ".")) == []


def test_an_edited_manifest_or_lock_is_decided_again(fresh: Callable[..., Workspace]) -> None:
    first = fresh("first", plugins={"alpha": "<1.2"})
    assert ok(first)
    edited = fresh("edited", first.manifest.replace('"<1.2"', '"<1.1"'))
    assert ok(edited)  # the full installer: another manifest
    assert edited.installed() == {"alpha": "1.0.0"}
    assert ok(first) and not ok(first)  # nothing to do: decided, then replayed
    lock = first.lock
    (first.root / "p2phost.lock").write_text(lock + "# a comment\n")
    assert ok(first)  # the same lock in other bytes: the full installer says nothing to do
    (first.root / "p2phost.lock").write_text(lock.replace('version = "1.1.0"', 'version = "one"'))
    done, _ = install(first)
    assert done.returncode != 0 and "p2phost.lock" in done.stderr and "fix: " in done.stderr
    assert first.installed() == {"alpha": "1.1.0"}


def test_a_changed_cached_wheel_or_unpacked_file_is_decided_again(
    fresh: Callable[..., Workspace],
) -> None:
    first = fresh("first", plugins={"alpha": "<1.2"})
    assert ok(first)
    (wheel,) = (first.cache / "files").rglob("alpha-1.1.0-*.whl")
    wheel.chmod(0o644)
    with open(wheel, "ab") as out:
        out.write(b"tampered")
    second = fresh("second", first.manifest)
    assert ok(second)  # the full installer, which fetches the wheel again
    assert second.installed() == {"alpha": "1.1.0"} and b"tampered" not in wheel.read_bytes()
    (kept,) = (first.cache / "unpacked").glob("*/*/alpha/__init__.py")
    original = kept.read_text()
    kept.chmod(0o644)
    kept.write_text("raise SystemExit('tampered')\n")  # through every generation's link
    third = fresh("third", first.manifest)
    assert ok(third)  # the full installer, which unpacks the wheel again
    assert (third.root / ".p2phost/env/current/alpha/__init__.py").read_text() == original
    fourth = fresh("fourth", first.manifest)
    assert not ok(fourth)  # recorded again, from the tree unpacked again
    assert (fourth.root / ".p2phost/env/current/alpha/__init__.py").read_text() == original


def test_a_stale_answer_is_asked_again(
    frozen: tuple[Proxy, Callable[..., Workspace]],
) -> None:
    proxy, make = frozen
    proxy.max_age = 1
    first = make("first", plugins={"alpha": "*"})
    assert ok(first)
    time.sleep(1.5)  # the answers are now stale: only the full installer asks
    proxy.seen.clear()
    second = make("second", first.manifest)
    assert ok(second)
    assert [(path, status) for path, inm, status in proxy.api() if inm] == [
        ("/api/v1/plugins/alpha", 304)
    ]
    assert second.installed() == {"alpha": "1.1.0"}


def test_a_deleted_or_half_written_environment_is_built_again(
    fresh: Callable[..., Workspace],
) -> None:
    first = fresh("first", plugins={"beta": "*"})
    assert ok(first)
    expected = first.installed()
    shutil.rmtree(first.root / ".p2phost/env")
    assert ok(first)  # never built from this lock: the full installer
    assert first.installed() == expected
    shutil.rmtree(first.root / ".p2phost/env")
    assert not ok(first)  # now recorded
    assert first.installed() == expected
    # The active generation lost a file: not "nothing to do".
    assert ok(first) and not ok(first)
    (first.root / ".p2phost/env/current/alpha/__init__.py").unlink()
    assert ok(first)
    assert (first.root / ".p2phost/env/current/alpha/__init__.py").is_file()
    # No active generation, only a half-built one.
    (first.root / ".p2phost/env/current").unlink()
    assert ok(first)
    assert first.installed() == expected
    assert len(list((first.root / ".p2phost/env").glob("gen-*"))) == 1


def _left_by_a_kill(ws: Workspace, step: str, model: Path) -> None:
    """Leave in ``ws`` what a replay killed at ``step`` leaves (``model``: its generation)."""
    env = ws.root / ".p2phost/env"
    env.mkdir(parents=True)
    if step == "env made":
        return
    staged = env / "gen-000001"
    files = sorted(p for p in model.rglob("*") if p.is_file())
    for path in files[: len(files) // 2] if step == "half linked" else files:
        (staged / path.relative_to(model)).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, staged / path.relative_to(model))
    if step == "half linked":
        return
    os.symlink("gen-000001", env / ".current-4242")
    if step == "link made":
        return
    os.replace(env / ".current-4242", env / "current")
    if step == "lock half written":
        (ws.root / ".p2phost.lock.4242.tmp").write_text("# Written by p2phost")


@pytest.mark.parametrize(
    "step", ["env made", "half linked", "link made", "switched", "lock half written"]
)
def test_what_a_killed_replay_leaves_the_next_install_completes(
    fresh: Callable[..., Workspace], step: str
) -> None:
    first = fresh("first", plugins={"beta": "*"})
    assert ok(first)
    killed = fresh("killed", first.manifest)
    _left_by_a_kill(killed, step, (first.root / ".p2phost/env/current").resolve())
    assert ok(killed)  # none of these is a state a replay starts from
    assert killed.installed() == first.installed() and killed.lock == first.lock
    assert len(list((killed.root / ".p2phost/env").glob("gen-*"))) == 1


def test_a_replay_killed_at_any_moment(fresh: Callable[..., Workspace]) -> None:
    first = fresh("first", plugins={"beta": "*"})
    assert ok(first)
    env = {**os.environ, "P2PHOST_CACHE_DIR": str(first.cache), "P2PHOST_REGISTRY": first.registry}
    command = [sys.executable, "-m", "p2phost", "plugin", "install", "--yes"]
    for step in range(6):  # bounded: kills spread over a replay's few tens of milliseconds
        project = fresh(f"p{step}", first.manifest)
        process = subprocess.Popen(
            command, cwd=project.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.01 * step)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        done, _ = install(project)
        assert done.returncode == 0, done.stderr
        assert project.installed() == first.installed() and project.lock == first.lock
        assert len(list((project.root / ".p2phost/env").glob("gen-*"))) == 1


def test_a_refreshed_install_is_replayed_by_a_plain_one(fresh: Callable[..., Workspace]) -> None:
    """``--refresh`` revalidates every answer and records what it did with them."""
    first = fresh("first", plugins={"alpha": "*"})
    assert ok(first)
    refreshed = fresh("refreshed", first.manifest)
    done = refreshed.cli("plugin", "install", "--yes", "--refresh")
    assert done.returncode == 0, done.stderr
    plain = fresh("plain", first.manifest)
    assert not ok(plain)
    assert plain.lock == refreshed.lock and plain.installed() == {"alpha": "1.1.0"}


def test_a_project_another_command_holds_is_left_to_the_full_installer(
    fresh: Callable[..., Workspace],
) -> None:
    import fcntl
    import threading

    first = fresh("first", plugins={"alpha": "*"})
    assert ok(first)
    held = fresh("held", first.manifest)
    (held.root / ".p2phost").mkdir()
    with open(held.root / ".p2phost/install.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        threading.Timer(3.0, fcntl.flock, (handle, fcntl.LOCK_UN)).start()
        assert ok(held)  # the full installer, which waits for the lock
    assert held.installed() == {"alpha": "1.1.0"}
    assert not (held.root / ".p2phost/env/gen-000002").exists()


def test_a_refresh_is_replayed_when_every_answer_is_not_modified(
    frozen: tuple[Proxy, Callable[..., Workspace]],
) -> None:
    proxy, make = frozen
    proxy.max_age = 600
    first = make("first", plugins={"beta": "*"})
    assert ok(first)
    reference = make("reference", first.manifest)
    full, ran_full = install(reference, env={"P2PHOST_REPLAY": "0"})
    assert ran_full and full.returncode == 0
    proxy.seen.clear()
    second = make("second", first.manifest)
    done = second.cli(
        "plugin", "install", "--yes", "--refresh", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert "p2phost._install._installer" not in done.stderr  # replayed
    assert done.returncode == 0 and done.stdout == full.stdout
    assert sorted((path, status) for path, inm, status in proxy.api() if inm) == [
        ("/api/v1/plugins/alpha", 304),
        ("/api/v1/plugins/beta", 304),
    ]
    assert second.lock == reference.lock and generation(second) == generation(reference)
    # A page that changed (another ETag) is not the answer recorded: the full installer.
    path = "/api/v1/plugins/alpha"
    status, headers, body = proxy.frozen[path]  # type: ignore[index]
    proxy.frozen[path] = (status, {**headers, "ETag": '"changed"'}, body)  # type: ignore[index]
    third = make("third", first.manifest)
    done = third.cli(
        "plugin", "install", "--yes", "--refresh", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert done.returncode == 0 and "p2phost._install._installer" in done.stderr
    assert third.installed() == {"alpha": "1.1.0", "beta": "1.0.0"}
    # Through a proxy (urllib's *_proxy variables), only the full installer asks.
    fourth = make("fourth", first.manifest)
    done = fourth.cli(
        "plugin",
        "install",
        "--yes",
        "--refresh",
        env={"PYTHONPROFILEIMPORTTIME": "1", "no_proxy": "*"},
    )
    assert done.returncode == 0 and "p2phost._install._installer" in done.stderr
    assert fourth.installed() == third.installed()


def test_with_replaying_off_nothing_is_recorded(fresh: Callable[..., Workspace]) -> None:
    first = fresh("first", plugins={"alpha": "*"})
    done, ran_full = install(first, env={"P2PHOST_REPLAY": "0"})
    assert ran_full and done.returncode == 0
    assert not (first.cache / "replay").exists()
    assert ok(fresh("second", first.manifest))  # the full installer again, recording now
    assert not ok(fresh("third", first.manifest))  # replayed
