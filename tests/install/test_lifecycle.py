"""The plugin lifecycle as users run it, against a real registry process."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

from .conftest import Workspace

Make = Callable[..., Workspace]


def test_install_records_manifest_and_lock_and_shows_capabilities(workspace: Make) -> None:
    ws = workspace()
    out = ws.ok("plugin", "install", "beta", "--yes")
    # beta requires alpha>=1.1; 1.2.0 is yanked and 2.0.0 needs host-api >=2: 1.1.0 it is.
    assert "+ alpha 1.1.0  [transport]  publisher: p2phost  capabilities: listen, connect" in out
    assert "+ beta 1.0.0  [codec]" in out
    assert "installed 2 plugin(s)" in out
    assert ws.installed() == {"alpha": "1.1.0", "beta": "1.0.0"}
    manifest = ws.manifest
    assert "# my node: comments" in manifest and "# what we run" in manifest
    assert 'beta = ">=1.0.0,<2"' in manifest
    assert "alpha" not in manifest  # a dependency is locked, not declared
    lock = tomllib.loads(ws.lock)
    alpha = next(p for p in lock["plugin"] if p["name"] == "alpha")
    assert alpha["version"] == "1.1.0" and alpha["filename"] == "alpha-1.1.0-py3-none-any.whl"
    assert alpha["source"] == ws.registry and len(alpha["sha256"]) == 64
    assert alpha["url"].startswith(ws.registry + "/")
    assert next(p for p in lock["plugin"] if p["name"] == "beta")["requires"] == ["alpha"]

    listing = ws.ok("plugin", "list")
    assert "alpha" in listing and "transport" in listing and ws.registry in listing
    assert ws.ok("plugin", "info", "beta").startswith("beta 1.0.0")


def test_install_needs_yes_without_a_terminal(workspace: Make) -> None:
    ws = workspace()
    err = ws.fails("plugin", "install", "alpha")
    assert "confirmation" in err and "--yes" in err
    assert ws.installed() == {} and ws.lock == ""


def test_no_names_installs_what_the_manifest_declares(workspace: Make) -> None:
    ws = workspace(plugins={"alpha": "<1.1", "gamma": "*"})
    ws.ok("plugin", "install", "--yes")
    assert ws.installed() == {"alpha": "1.0.0", "gamma": "1.0.0"}
    assert 'alpha = "<1.1"' in ws.manifest  # the user's specifier is kept


def test_yanked_only_when_pinned_exactly(workspace: Make) -> None:
    ws = workspace()
    ws.ok("plugin", "install", "alpha==1.2.0", "--yes")
    assert ws.installed() == {"alpha": "1.2.0"}
    assert 'alpha = "==1.2.0"' in ws.manifest


def test_upgrade_outdated_remove(workspace: Make) -> None:
    ws = workspace()
    ws.ok("plugin", "install", "alpha==1.0.0", "--yes")
    out = ws.ok("plugin", "outdated")
    assert "alpha" in out and "1.0.0" in out and "1.1.0" in out  # newest usable: 1.1.0
    # Upgrades stay within the manifest's specifier: relax it, then upgrade.
    (ws.root / "p2phost.toml").write_text(ws.manifest.replace('"==1.0.0"', '">=1.0,<2"'))
    out = ws.ok("plugin", "upgrade", "--yes")
    assert "alpha 1.0.0 -> 1.1.0" in out
    assert ws.installed() == {"alpha": "1.1.0"}
    assert "up to date" in ws.ok("plugin", "outdated")
    generation = (ws.root / ".p2phost/env/current").resolve()
    assert "nothing to do" in ws.ok("plugin", "upgrade", "alpha", "--yes")
    assert (ws.root / ".p2phost/env/current").resolve() == generation  # nothing rebuilt

    ws.ok("plugin", "install", "beta", "--yes")
    err = ws.fails("plugin", "remove", "alpha")
    assert "cannot remove alpha: beta 1.0.0 requires it" in err
    assert ws.installed() == {"alpha": "1.1.0", "beta": "1.0.0"}
    ws.ok("plugin", "remove", "beta", "--yes")
    assert ws.installed() == {"alpha": "1.1.0"} and "beta" not in ws.manifest
    ws.ok("plugin", "install", "beta", "--yes")
    ws.ok("plugin", "remove", "--force", "alpha", "--yes")
    assert ws.installed() == {"beta": "1.0.0"}  # forced: the node will say alpha is missing
    assert "# my node: comments" in ws.manifest and 'name = "alpha"' not in ws.lock


def test_upgrade_outdated_and_sync_in_a_new_project_say_what_they_did(workspace: Make) -> None:
    ws = workspace(plugins={"alpha": "<1.1"})
    # Nothing installed: not "all plugins are up to date".
    assert ws.ok("plugin", "outdated") == \
        "no plugin is installed yet: run `p2phost plugin install`\n"
    out = ws.ok("plugin", "upgrade", "--yes")  # installs: nothing was there to upgrade
    assert "\ninstalled 1 plugin(s): alpha 1.0.0\n" in out and "upgraded" not in out
    (ws.root / "p2phost.toml").write_text(ws.manifest.replace('"<1.1"', '"<2"'))
    assert "\nupgraded 1 plugin(s): alpha 1.1.0\n" in ws.ok("plugin", "upgrade", "--yes")
    assert ws.ok("plugin", "upgrade", "--yes") == \
        "nothing to do: no newer release within the ranges p2phost.toml allows\n"
    assert ws.ok("plugin", "sync") == \
        "nothing to do: the plugin environment already holds what p2phost.lock says\n"


def test_sync_reproduces_a_project_from_its_lock_offline(workspace: Make) -> None:
    first = workspace("first")
    first.ok("plugin", "install", "beta", "pydep", "--yes")
    lock = tomllib.loads(first.lock)
    # pydep's own Python requirement came from the user's package index; p2phost-sdk and
    # msgpack did not: the host provides them, and a second copy would shadow the host's.
    assert [p["name"] for p in lock["package"]] == ["six"]
    assert "p2phost" not in {n.split("-")[0] for n in first.installed()}
    assert next(p for p in lock["plugin"] if p["name"] == "pydep")["dependencies"] == [
        "msgpack>=1", "six>=1"]

    second = workspace("second")
    (second.root / "p2phost.toml").write_text(first.manifest)
    (second.root / "p2phost.lock").write_text(first.lock)
    out = second.ok("plugin", "sync", "--offline")
    assert "+ beta 1.0.0" in out
    assert second.installed() == first.installed()
    assert set(second.installed()) == {"alpha", "beta", "pydep", "six"}
    assert "nothing to do" in second.ok("plugin", "sync")
    # Identical trees, file for file.
    trees = []
    for ws in (first, second):
        site = (ws.root / ".p2phost/env/current").resolve()
        trees.append({p.relative_to(site).as_posix(): p.read_bytes()
                      for p in site.rglob("*") if p.is_file()})
    assert trees[0] == trees[1]


def test_sync_without_a_lock_removes_nothing(workspace: Make) -> None:
    err = workspace().fails("plugin", "sync")
    assert "no p2phost.lock in" in err and "p2phost plugin install" in err


def test_sync_offline_with_an_empty_cache_says_what_is_missing(workspace: Make, tmp_path) -> None:
    first = workspace("first")
    first.ok("plugin", "install", "alpha", "--yes")
    second = workspace("second", cache_dir=tmp_path / "empty-cache")
    (second.root / "p2phost.toml").write_text(first.manifest)
    (second.root / "p2phost.lock").write_text(first.lock)
    err = second.fails("plugin", "sync", "--offline")
    assert "alpha-1.1.0-py3-none-any.whl (alpha 1.1.0) is not in the download cache" in err
    second.ok("plugin", "sync")  # online it downloads from the lock's URLs
    assert second.installed() == {"alpha": "1.1.0"}


def test_search_and_info_from_the_registry(workspace: Make) -> None:
    ws = workspace()
    out = ws.ok("plugin", "search", "needs alpha")
    assert "beta" in out
    out = ws.ok("plugin", "search", "", "--kind", "transport")
    assert "alpha" in out and "beta" not in out
    info = ws.ok("plugin", "info", "alpha")
    assert "(not installed)" in info and "newest that fits this host: 1.1.0" in info
    assert "needs host-api >=2, this host is 1.1" in info
    assert "yanked: breaks framing" in info
    assert "no plugin matches" in ws.ok("plugin", "search", "zzzz-nothing")


def test_scripted_forms_print_and_write_what_typer_would(workspace: Make,
                                                        tmp_path: Path) -> None:
    """``plugin install --yes`` and ``plugin sync`` run without typer (main.scripted); a
    root option sends the same command through typer. Both must do the same."""
    fast = workspace("fast", cache_dir=tmp_path / "fast-cache")
    slow = workspace("slow", cache_dir=tmp_path / "slow-cache")
    for args in (("plugin", "install", "beta", "-y"), ("plugin", "install", "--yes"),
                 ("plugin", "install", "--yes", "nosuch"), ("plugin", "install", "--yes", "b@d"),
                 ("plugin", "sync"), ("plugin", "sync", "--offline")):
        one = fast.cli(*args)
        two = slow.cli("--log-format", "text", *args)
        assert (one.returncode, one.stdout, one.stderr) == \
            (two.returncode, two.stdout.replace("slow", "fast"),
             two.stderr.replace("slow", "fast")), args
        assert fast.lock == slow.lock and fast.manifest == slow.manifest.replace("slow", "fast")
    assert fast.installed() == slow.installed() == {"alpha": "1.1.0", "beta": "1.0.0"}


def test_a_scripted_install_loads_neither_typer_nor_rich(workspace: Make) -> None:
    import json
    import os
    import subprocess
    import sys

    ws = workspace(plugins={"alpha": "*"})
    code = ("import atexit, json, sys\n"
            "atexit.register(lambda: print('MODULES=' + json.dumps(sorted(sys.modules))))\n"
            "from p2phost._cli.main import run\n"
            "run(['plugin', 'install', '--yes'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ws.root, capture_output=True,
                          text=True, timeout=60, check=True,
                          env={**os.environ, "P2PHOST_REGISTRY": ws.registry,
                               "P2PHOST_CACHE_DIR": str(ws.cache)})
    assert "installed 1 plugin(s): alpha" in done.stdout
    line = next(li for li in done.stdout.splitlines() if li.startswith("MODULES="))
    loaded = set(json.loads(line.removeprefix("MODULES=")))
    assert not {m for m in loaded if m.split(".")[0] in
                {"typer", "click", "rich", "tomlkit", "asyncio", "pluggy", "cryptography"}}


def test_a_no_op_install_asks_no_registry(workspace: Make) -> None:
    ws = workspace(plugins={"alpha": "<1.2"})
    ws.ok("plugin", "install", "--yes")
    assert ws.installed() == {"alpha": "1.1.0"}
    generation = (ws.root / ".p2phost/env/current").resolve()
    lock = ws.lock
    gone = {"P2PHOST_REGISTRY": "http://127.0.0.1:9"}  # nothing listens there
    done = ws.cli("plugin", "install", "--yes", env=gone)
    assert done.returncode == 0, done.stderr
    assert "nothing to do: the plugins already match" in done.stdout
    assert (ws.root / ".p2phost/env/current").resolve() == generation and ws.lock == lock
    # A specifier the locked version no longer meets is resolved again, so asks.
    (ws.root / "p2phost.toml").write_text(ws.manifest.replace('"<1.2"', '"<1.1"'))
    assert "did not answer" in ws.fails("plugin", "install", "--yes", env=gone)
    ws.ok("plugin", "install", "--yes")
    assert ws.installed() == {"alpha": "1.0.0"}


def test_a_registry_changed_in_the_manifest_is_asked_again(workspace: Make) -> None:
    """A lock whose plugins came from a registry p2phost.toml no longer names is stale: the
    no-op install must not keep it (``plugin sync`` elsewhere would fetch from the old one)."""
    ws = workspace(plugins={"alpha": "<1.2"})
    (ws.root / "p2phost.toml").write_text(f'[registry]\nurl = "{ws.registry}"\n\n' + ws.manifest)
    from_manifest = {"P2PHOST_REGISTRY": ""}  # the manifest's registry, not the override
    done = ws.cli("plugin", "install", "--yes", env=from_manifest)
    assert done.returncode == 0, done.stderr
    lock = ws.lock
    again = ws.cli("plugin", "install", "--yes", env=from_manifest)
    assert "nothing to do" in again.stdout and ws.lock == lock  # unchanged: still a no-op
    moved = ws.manifest.replace(ws.registry, "http://127.0.0.1:9")  # nothing listens there
    (ws.root / "p2phost.toml").write_text(moved)
    err = ws.fails("plugin", "install", "--yes", env=from_manifest)
    assert "did not answer" in err and "nothing to do" not in err
    assert ws.lock == lock


def test_generations_link_the_files_of_wheels_unpacked_once(workspace: Make) -> None:
    first = workspace("first")
    first.ok("plugin", "install", "alpha", "--yes")
    installed = first.root / ".p2phost/env/current/alpha/__init__.py"
    kept, = (first.cache / "unpacked").glob("*/*/alpha/__init__.py")
    assert installed.stat().st_ino == kept.stat().st_ino  # a link, not a copy
    assert not installed.stat().st_mode & 0o222  # read-only: shared with other projects
    # A tree that lost a file (a cache cleaned by hand) is unpacked again, not linked short.
    kept.unlink()
    second = workspace("second")
    second.ok("plugin", "install", "alpha", "--yes")
    assert (second.root / ".p2phost/env/current/alpha/__init__.py").read_text() == \
        installed.read_text()
    assert second.installed() == {"alpha": "1.1.0"}
    assert "ok   plugins load: alpha 1.1.0" in second.cli("doctor").stdout


def test_a_tree_half_unpacked_by_a_dead_install_is_removed(workspace: Make) -> None:
    import shutil
    import subprocess

    first = workspace("first")
    first.ok("plugin", "install", "alpha", "--yes")
    tree, = (p for p in (first.cache / "unpacked").glob("*/*") if p.is_dir())
    dead = subprocess.Popen(["true"])
    dead.wait()
    shutil.rmtree(tree)  # as if killed (kill -9) half way through unpacking
    part = tree.with_name(f"{tree.name}.{dead.pid}.part")
    (part / "alpha").mkdir(parents=True)
    workspace("second").ok("plugin", "install", "alpha", "--yes")
    assert tree.is_dir() and not part.exists()
