"""``p2phost key new/show``: publisher key files, their default place and their protection."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from p2phost_sdk.signing import parse_publisher_key
from tests.conftest import run_cli


def _env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "P2PHOST_PUBLISHER_KEY": ""}


def test_new_writes_an_owner_only_key_and_show_prints_the_same_public_key(tmp_path: Path) -> None:
    env = _env(tmp_path)
    made = run_cli("key", "new", env=env)
    assert made.returncode == 0, made.stderr
    path = tmp_path / "config" / "p2phost" / "publisher.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = made.stdout.strip().splitlines()[-1]
    assert len(parse_publisher_key(public)) == 32 and public.startswith("ed25519:")
    assert f"# public: {public}" in path.read_text()
    shown = run_cli("key", "show", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == public
    again = run_cli("key", "new", "--out", str(tmp_path / "other.key"))
    assert again.stdout.strip().splitlines()[-1] != public  # a new key each time


def test_new_never_overwrites_a_key_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = run_cli("key", "new", "--out", str(path), check=True).stdout.split()[-1]
    refused = run_cli("key", "new", "--out", str(path))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"error: {path} already exists")
    assert "--force" in refused.stderr
    assert run_cli("key", "show", "--key", str(path)).stdout.strip() == first
    forced = run_cli("key", "new", "--out", str(path), "--force", check=True).stdout.split()[-1]
    assert forced != first and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unprotected_missing_or_malformed_keys_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    run_cli("key", "new", "--out", str(path), check=True)
    os.chmod(path, 0o644)
    loose = run_cli("key", "show", "--key", str(path))
    assert loose.returncode != 0 and "accessible by others" in loose.stderr
    assert f"chmod 600 {path}" in loose.stderr
    missing = run_cli("key", "show", "--key", str(tmp_path / "nope.key"))
    assert missing.returncode != 0 and "no publisher key at" in missing.stderr
    assert "p2phost key new --out" in missing.stderr
    path.write_text("not a key\n")
    os.chmod(path, 0o600)
    bad = run_cli("key", "show", "--key", str(path))
    assert bad.returncode != 0 and "is not a p2phost publisher key" in bad.stderr
    for done in (loose, missing, bad):
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
