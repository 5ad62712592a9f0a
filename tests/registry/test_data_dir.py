"""A ``--data`` directory that does not exist (a typo) is refused by the commands that use
a store, with the commands that make one; ``seed`` and ``serve --create`` make it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args", [
    ("serve", "--port", "0"),
    ("token", "create", "--owner", "alice"),
    ("token", "list"),
    ("token", "revoke", "p2p_0000"),
])
def test_a_missing_data_directory_is_refused_not_made(tmp_path: Path,
                                                      args: tuple[str, ...]) -> None:
    typo = tmp_path / "regsitry"
    done = run_cli("registry", *args, "--data", str(typo), timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: no registry at {typo}: the --data directory "
                                  "does not exist"), done.stderr
    assert f"\nfix: check the path; to make a registry there: p2phost registry seed --data " \
           f"{typo}" in done.stderr and f"serve --create --data {typo}" in done.stderr
    assert not typo.exists()


def test_serve_create_makes_an_empty_registry(tmp_path: Path) -> None:
    from tests.registry.conftest import start_registry  # passes --create

    server = start_registry(tmp_path / "new")
    try:
        assert (tmp_path / "new").is_dir()
    finally:
        server.stop()
    listed = run_cli("registry", "token", "list", "--data", str(tmp_path / "new"), timeout=30)
    assert listed.returncode == 0 and "no tokens" in listed.stdout, listed.stderr


@pytest.mark.parametrize("args", [("serve", "--port", "0"), ("token", "create", "--owner",
                                                             "alice"), ("token", "list")])
def test_a_directory_that_is_not_a_registry_is_refused_not_turned_into_one(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    other = tmp_path / "notreg"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    done = run_cli("registry", *args, "--data", str(other), timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "exists but is not a registry" in done.stderr, done.stderr
    assert "\nfix: " in done.stderr and "p2phost_" not in done.stdout, done.stdout
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_data_path_that_is_a_file_is_named_as_a_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.txt"
    path.write_text("")
    done = run_cli("registry", "token", "list", "--data", str(path), timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "names a file, not a directory" in done.stderr, done.stderr
    assert "does not exist" not in done.stderr and "\nfix: " in done.stderr

