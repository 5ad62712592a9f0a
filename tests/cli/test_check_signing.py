"""``run --check`` builds the plugins as a start does, with the node's key: gossip (which
signs its messages with it) warned there "gossip has no key to sign with (an older host?):
its messages are unsigned, and peers requiring signatures refuse them", which a run of the
same project never says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import run_cli


def test_run_check_gives_plugins_the_node_key(make_project: Callable[..., Path]) -> None:
    root = make_project(["tcp-transport", "json-codec", "noise-security", "gossip"],
                        config={"gossip": {"topics": ["news"]}})
    done = run_cli("run", "--check", cwd=root, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded gossip" in done.stdout
    assert "no key to sign with" not in done.stdout + done.stderr
