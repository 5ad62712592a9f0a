"""Defects a newcomer found with only the built wheels installed, each through the CLI:
a corrupt lock under ``run --check``, an empty body or topic given to ``send``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunningRegistry, run_cli

from .conftest import cli_env, new_project


@pytest.mark.parametrize("damage", ["not toml [[[", "version = 7"])
def test_run_and_run_check_refuse_a_corrupt_lock(
        tmp_path: Path, official_registry: RunningRegistry, damage: str) -> None:
    root = new_project(tmp_path / "node", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    assert run_cli("run", "--check", cwd=root, env=env).returncode == 0
    lock = root / "p2phost.lock"
    text = lock.read_text()
    lock.write_text(text.replace("version = 1", damage) if damage.startswith("version")
                    else text + damage + "\n")
    for args in (("run", "--check"), ("run", "--check", "--json"), ("run",)):
        done = run_cli(*args, cwd=root, env=env, timeout=30)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith("error: p2phost.lock"), done.stderr
        assert "\nfix: restore it from version control, or delete it and run `p2phost " \
               "plugin install`" in done.stderr
        assert "loaded " not in done.stdout and "listening" not in done.stdout


@pytest.mark.parametrize(("body", "stdin", "said"), [
    ("-", "", "the body read from standard input is empty"),
    ("-", " \n", "the body read from standard input is empty"),
    ("", None, "the body given is empty"),
    ("@empty.json", None, "the body in empty.json is empty"),
])
def test_send_refuses_an_empty_body(tmp_path: Path, body: str, stdin: str | None,
                                    said: str) -> None:
    (tmp_path / "empty.json").write_text("")
    done = run_cli("send", "tcp://127.0.0.1:9", "echo", body, cwd=tmp_path, input=stdin)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {said}"), done.stderr
    assert "Expecting value" not in done.stderr
    assert "\nfix: send a JSON value" in done.stderr and "null" in done.stderr


@pytest.mark.parametrize("topic", ["", " "])
def test_send_refuses_an_empty_topic(tmp_path: Path, topic: str) -> None:
    done = run_cli("send", "tcp://127.0.0.1:9", topic, "{}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: the topic is empty"), done.stderr
    assert "\nfix: name the topic" in done.stderr
