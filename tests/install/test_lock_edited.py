"""A lock edited by hand (a plugin's sha256 changed, a declared plugin's entry dropped) is
reported by ``run --check`` and ``doctor``, and the fix they give repairs it."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import build_wheels
from tests.install.conftest import Workspace, hand_made_registry

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
                                 ("plugin", "install", "--yes"),
                                 ("plugin", "upgrade", "--yes")])
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
    # It says what it did (not "nothing to do"), and installed nothing.
    assert repaired.stdout == "locked echo 1.0.0 again: p2phost.lock now holds the sha256 " \
        "of the file it verifies; the installed plugin is unchanged\n"
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

    repaired = ws.cli("plugin", "install", "--yes", env=env)
    assert repaired.returncode == 0, repaired.stderr
    # echo was installed all along: only its entry is written again, and said so.
    assert repaired.stdout == (
        "= echo 1.0.0: installed, but p2phost.lock lacks it (locks it again)\n"
        "locked echo 1.0.0 again: p2phost.lock had no entry for it; the installed plugin "
        "is unchanged\n")
    assert ws.lock == lock
    assert ws.cli("run", "--check", env=env).returncode == 0


@pytest.mark.parametrize("install", [("plugin", "install", "pydep", "--yes"),
                                     ("plugin", "install", "--yes"),
                                     ("plugin", "upgrade", "--yes")])
def test_an_edited_package_sha256_is_resolved_again_by_sync(
        workspace: Make, install: tuple[str, ...]) -> None:
    # six is no plugin but a Python package pydep needs: `plugin install six` cannot fetch
    # it, and the file its index serves is not the one the edited entry names.
    ws = workspace()
    ws.ok("plugin", "install", "beta", "pydep", "--yes")
    found = re.search(r'name = "six"\n(?:.*\n)*?sha256 = "([0-9a-f]{64})"', ws.lock)
    assert found, ws.lock
    good = found.group(1)
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    (ws.root / "p2phost.lock").write_text(ws.lock.replace(good, bad))

    doctor = ws.cli("doctor")
    assert "p2phost.lock gives six" in doctor.stdout, doctor.stdout
    assert "p2phost plugin sync (resolves six again" in doctor.stdout
    assert "plugin install six" not in doctor.stdout
    # An install says what doctor says (not "tampered download", nor "retry").
    said = ws.fails(*install)
    error, fix = said.removeprefix("error: ").rstrip("\n").split("\nfix: ")
    assert f"FAIL {error}\n" in doctor.stdout and f"fix: {fix}\n" in doctor.stdout, said
    assert "tampered" not in said and "retry" not in said
    synced = ws.cli("plugin", "sync")
    assert synced.returncode == 0, synced.stderr
    assert good in ws.lock and bad not in ws.lock
    assert "p2phost.lock gives six" not in ws.cli("doctor").stdout
    ws.ok(*install)


def _tinycbor(version: str, out: Path) -> Path:
    """A wheel of tinycbor ``version`` (the cbor-codec plugin's one requirement)."""
    root = out / f"tinycbor-{version}"
    (root / "tinycbor").mkdir(parents=True)
    (root / "tinycbor" / "__init__.py").write_text(
        f'"""Stands in for a package from an index."""\n\nVERSION = "{version}"\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "tinycbor"\nversion = "{version}"\n')
    return next(iter(build_wheels([root], out / "wheels").values()))


def _index(wheels: dict[Path, bytes]) -> dict[str, bytes]:
    """A PEP 503 index of ``wheels``, each published with its own sha256 and served as
    the bytes given (PEP 658 metadata too, so pip resolves without downloading it)."""
    pages: dict[str, bytes] = {}
    links = []
    for wheel, served in wheels.items():
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(archive.read(n) for n in archive.namelist()
                            if n.endswith(".dist-info/METADATA"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        meta = hashlib.sha256(metadata).hexdigest()
        links.append(f'<a href="/files/{wheel.name}#sha256={digest}" '
                     f'data-dist-info-metadata="sha256={meta}" '
                     f'data-core-metadata="sha256={meta}">{wheel.name}</a>')
        pages[f"/files/{wheel.name}"] = served
        pages[f"/files/{wheel.name}.metadata"] = metadata
    body = "<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>"
    pages["/simple/tinycbor/"] = body.encode()
    return pages


def test_a_bad_download_of_a_package_resolved_again_is_not_called_an_edited_lock(
        workspace: Make, tmp_path: Path) -> None:
    # sync resolves tinycbor again (its entry was deleted): the index now has 1.1.0, whose
    # entry carries the sha256 the index published, and serves another file. What is wrong
    # is that download, not the lock (which never named 1.1.0).
    old, new = _tinycbor("1.0.0", tmp_path), _tinycbor("1.1.0", tmp_path)
    ws = workspace(plugins={"cbor-codec": "*"})
    html = {"/simple/tinycbor/": "text/html"}
    with hand_made_registry(_index({old: old.read_bytes()}), content_types=html) as url:
        env = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": f"{url}/simple/",
               "PIP_FIND_LINKS": "", "PIP_NO_INDEX": ""}
        done = ws.cli("plugin", "install", "--yes", env=env)
        assert done.returncode == 0, done.stderr
    lock = ws.lock
    start = lock.index('[[package]]\nname = "tinycbor"')
    end = lock.find("[[", start + 2)
    (ws.root / "p2phost.lock").write_text(lock[:start] + (lock[end:] if end > 0 else ""))
    data = new.read_bytes()
    tampered = data[:-1] + bytes([data[-1] ^ 0xFF])
    with hand_made_registry(_index({old: old.read_bytes(), new: tampered}),
                            content_types=html) as url:
        env = {**env, "PIP_INDEX_URL": f"{url}/simple/"}
        said = ws.fails("plugin", "sync", env=env)
    assert f"{new.name} from" in said and "tampered or truncated download" in said, said
    assert "edited or replaced" not in said and "restore p2phost.lock" not in said
    assert ws.installed()["tinycbor"] == "1.0.0"
