"""Outsider report D7, D8, D15 through the CLI in a subprocess (no terminal): deleting
commands refuse without --yes, an oversized message names whose limit it is, and the
README's ``plugin new`` runs as written."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
import tomlkit

from tests.conftest import RunningRegistry, run_cli

from .conftest import cli_env, new_project, running_node


def _set(root: Path, table: str, key: str, value: object) -> None:
    path = root / "p2phost.toml"
    doc = tomlkit.parse(path.read_text())
    doc.setdefault(table, tomlkit.table())[key] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(doc))


def _refused(done: object, what: str) -> None:
    import subprocess

    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{what} needs a confirmation, and there is no terminal" in done.stderr
    assert "fix: re-run with --yes" in done.stderr
    assert "Aborted!" not in done.stderr


def test_inbox_purge_says_there_is_no_inbox_before_asking(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    done = run_cli("inbox", "purge", cwd=root, env=env, input="")
    assert done.returncode == 2 and "this node has no inbox" in done.stderr, done.stderr
    assert "[y/N]" not in done.stdout + done.stderr


def test_inbox_purge_without_a_terminal_refuses_and_removes_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2phost._cli import inbox
    from p2phost._errors import UserError

    purged: list[str] = []

    class Inbox:
        async def purge_inbox(self, url: str) -> int:
            purged.append(url)
            return 1

    monkeypatch.setattr(inbox.Project, "find", staticmethod(lambda: None))
    monkeypatch.setattr(inbox, "_inboxes", lambda project, medium: [("redis://x", Inbox())])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    with pytest.raises(UserError) as refused:
        inbox.purge(None, yes=False, as_json=False)
    assert "purging the inbox needs a confirmation" in str(refused.value)
    assert refused.value.fix == "re-run with --yes" and purged == []
    inbox.purge(None, yes=True, as_json=True)
    assert purged == ["redis://x"]


def test_dead_purge_all_asks_like_inbox_purge(tmp_path: Path) -> None:
    from p2phost._runtime.delivery._store import DATABASE_NAME, open_database

    root = tmp_path / "alice"
    run_cli("init", str(root), "--listen", "tcp://127.0.0.1:0", check=True)
    state = root / ".p2phost"
    state.mkdir(exist_ok=True)
    db = open_database(state / DATABASE_NAME)
    db.execute("INSERT INTO dead (direction, peer, message_id, topic, content_type, body, "
               "attempts, reason, error, traceback, first_at, dead_at) VALUES "
               "('in', 'p', 1, 'doomed', 'application/json', x'7b7d', 1, 'r', 'e', '', 0, 0)")
    db.commit()
    db.close()
    _refused(run_cli("dead", "purge", "--all", cwd=root, input=""), "purging every dead letter")
    left = sqlite3.connect(state / DATABASE_NAME).execute(
        "SELECT count(*) FROM dead").fetchone()[0]
    assert left == 1
    done = run_cli("dead", "purge", "--all", "--yes", cwd=root, input="")
    assert done.returncode == 0 and "purged 1 dead letters" in done.stdout, done.stderr


def test_plugin_new_from_the_readme_runs_without_a_terminal(tmp_path: Path) -> None:
    done = run_cli("plugin", "new", "codec", "shout-codec", cwd=tmp_path, input="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "shout-codec" / "pyproject.toml").exists()


def test_plugin_new_says_next_with_a_path_the_shell_takes(tmp_path: Path) -> None:
    done = run_cli("plugin", "new", "codec", "shout-codec", "--dir", "my plugins/shout",
                   cwd=tmp_path, input="")
    assert done.returncode == 0, done.stdout + done.stderr
    # Pasted as printed, the path with a space is one argument of cd.
    assert "next: cd 'my plugins/shout' && python -m pytest" in done.stdout, done.stdout


def test_an_oversized_message_says_whose_limit_and_what_to_change(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    alice = new_project(tmp_path / "alice", official_registry, "echo")
    bob = new_project(tmp_path / "bob", official_registry)
    body = '{"x": "' + "a" * 5000 + '"}'
    _set(bob, "node", "max-frame-size", 4096)
    with running_node(alice) as address:
        mine = run_cli("send", address, "echo", body, "--request", cwd=bob, env=env)
    assert mine.returncode == 1, mine.stdout + mine.stderr
    assert "FrameTooLarge" in mine.stderr and "this node's limit" in mine.stderr
    assert "fix: send it in smaller parts, or raise max-frame-size in [node] of this " \
           "project's p2phost.toml" in mine.stderr

    _set(bob, "node", "max-frame-size", 16 * 1024 * 1024)
    _set(alice, "node", "max-frame-size", 4096)
    with running_node(alice) as address:
        theirs = run_cli("send", address, "echo", body, "--request", cwd=bob, env=env)
    assert theirs.returncode == 1, theirs.stdout + theirs.stderr
    assert "FrameTooLarge" in theirs.stderr and "the peer's limit" in theirs.stderr
    assert "fix: send it in smaller parts, or raise max-frame-size in [node] of that " \
           "node's p2phost.toml" in theirs.stderr


def test_run_with_json_logs_writes_only_json_lines_naming_the_node(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    """Outsider D6: the event-loop line had no node/node_id, the stopping line was text."""
    import json
    import os
    import subprocess
    import sys

    root = new_project(tmp_path / "alice", official_registry)
    process = subprocess.Popen([sys.executable, "-m", "p2phost", "--log-format", "json", "run"],
                               cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ))
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the node prints its addresses, then runs
            if line.startswith("listening on "):
                break
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines()]  # each one JSON
    messages = [line["message"] for line in lines]
    assert any(m.startswith("event loop: ") for m in messages), messages
    assert any(m.startswith("stopping: draining") for m in messages), messages
    assert all(line.get("node") and line.get("node_id") for line in lines), lines
