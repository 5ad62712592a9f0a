"""``--json``: each command prints one JSON document with (at least) the keys docs/cli.md
documents for it. The examples in docs/cli.md are the contract: this test reads them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunningRegistry, run_cli

from .conftest import cli_env, new_project, running_node

DOC = REPO / "docs" / "cli.md"


def documented() -> dict[str, list[Any]]:
    """command (as written in docs/cli.md) -> its JSON examples, in order."""
    examples: dict[str, list[Any]] = {}
    command = None
    lines = iter(DOC.read_text().splitlines())
    for line in lines:
        found = re.match(r"^`(p2phost [^`]*--json)`", line)
        if found:
            command = found.group(1)
        elif line.strip() == "```json":
            body = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                body.append(inner)
            assert command is not None, "a JSON example before any command in docs/cli.md"
            examples.setdefault(command, []).append(json.loads("\n".join(body)))
    return examples


def assert_shape(example: Any, actual: Any, where: str = "$") -> None:
    """Every key of ``example`` is in ``actual``, recursively (lists: their first item)."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        missing = sorted(set(example) - set(actual))
        assert not missing, f"{where}: documented keys missing: {missing} (got {sorted(actual)})"
        for key, value in example.items():
            if actual[key] is not None:
                assert_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        if example and actual:
            for i, item in enumerate(actual):
                assert_shape(example[0], item, f"{where}[{i}]")


def check(command: str, actual: Any, example: int = 0) -> None:
    """``actual`` has the shape docs/cli.md documents for ``command``."""
    assert_shape(documented()[command][example], actual, command)


def output(*args: str, cwd: Path, env: dict[str, str], code: int = 0) -> Any:
    done = run_cli(*args, cwd=cwd, env=env, timeout=120)
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_every_json_example_in_the_docs_is_checked_here() -> None:
    # (peers --stats prints the delivery counters documented in docs/delivery.md; top's
    # view is checked on a busy node in tests/observe/test_top.py)
    tested = set(re.findall(r'check\("(p2phost [^"]+)"', Path(__file__).read_text()))
    assert set(documented()) - {"p2phost peers --stats --json",
                                "p2phost top --once --json"} == tested


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory,
            official_registry: RunningRegistry) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("json")
    return new_project(root / "alice", official_registry), cli_env(official_registry,
                                                                   root / "cache")


def test_id_run_check_and_doctor(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    check("p2phost id --json", output("id", "--json", cwd=root, env=env))
    check("p2phost run --check --json", output("run", "--check", "--json", cwd=root, env=env))
    report = output("doctor", "--json", cwd=root, env=env)
    check("p2phost doctor --json", report)
    assert report["ok"] is True and report["problems"] == 0
    assert {c["status"] for c in report["checks"]} == {"ok"}


def test_doctor_json_reports_problems_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "p2phost.toml").write_text('[node]\nlisten = ["tcp://127.0.0.1:0"]\n')
    report = output("doctor", "--json", cwd=tmp_path, env={}, code=1)
    check("p2phost doctor --json", report)
    assert report["ok"] is False and report["problems"] == 1
    problem = next(c for c in report["checks"] if c["status"] == "problem")
    assert "no transport plugin serves tcp://" in problem["message"]


def test_plugin_list_info_and_search(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    listing = output("plugin", "list", "--json", cwd=root, env=env)
    check("p2phost plugin list --json", listing)
    assert {p["name"] for p in listing["plugins"] if p["declared"]} >= {"echo", "tcp-transport"}
    installed = output("plugin", "info", "tcp-transport", "--json", cwd=root, env=env)
    check("p2phost plugin info NAME --json", installed, 0)
    assert installed["installed"] is True and installed["provides"] == {"schemes": ["tcp"]}
    remote = output("plugin", "info", "chat", "--json", cwd=root, env=env)
    check("p2phost plugin info NAME --json", remote, 1)
    assert remote["installed"] is False and remote["newest"]["kinds"] == ["app"]
    found = output("plugin", "search", "transport", "--json", cwd=root, env=env)
    check("p2phost plugin search [QUERY] --json", found)
    assert "tcp-transport" in {p["name"] for p in found["plugins"]}


def test_plugin_outdated(tmp_path: Path, registry: RunningRegistry) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "p2phost.toml").write_text('[node]\nlisten = []\n[plugins]\nalpha = "<1.1"\n')
    env = cli_env(registry, tmp_path / "cache")
    assert run_cli("plugin", "install", "--yes", cwd=root, env=env).returncode == 0
    rows = output("plugin", "outdated", "--json", cwd=root, env=env)
    check("p2phost plugin outdated --json", rows)
    assert rows["outdated"] == [{"name": "alpha", "installed": "1.0.0", "wanted": "1.0.0",
                                 "latest": "1.1.0"}]


def test_trust_list_and_dead_list(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    peer = run_cli("id", cwd=root, check=True).stdout.strip()
    run_cli("trust", "add", peer, "--name", "me", cwd=root, env=env, check=True)
    trusted = output("trust", "list", "--json", cwd=root, env=env)
    check("p2phost trust list --json", trusted)
    assert peer in {p["peer_id"] for p in trusted["peers"]}
    dead = output("dead", "list", "--json", cwd=root, env=env)
    check("p2phost dead list --json", dead)
    assert dead == []


def test_peers_and_ping_of_a_running_node(
        tmp_path: Path, project: tuple[Path, dict[str, str]],
        official_registry: RunningRegistry) -> None:
    root, env = project
    with running_node(root) as address:
        pinged = output("ping", address, "--count", "2", "--interval", "0", "--json",
                        cwd=root, env=env)
        answer = output("peers", "--json", cwd=root, env=env)
        stats = output("peers", "--stats", "--json", cwd=root, env=env)
        described = output("describe", address, "--json", cwd=root, env=env)
    check("p2phost ping ADDR --json", pinged)
    check("p2phost describe ADDR --json", described)
    assert [t["topic"] for t in described["topics"]] == ["echo"]
    assert pinged["sent"] == 2 and pinged["received"] == 2 and len(pinged["rtt_ms"]) == 2
    check("p2phost peers --json", answer)
    assert address in answer["addresses"]
    assert isinstance(stats, dict)


def test_key_show(tmp_path: Path) -> None:
    key = tmp_path / "publisher.key"
    run_cli("key", "new", "--out", str(key), check=True)
    shown = output("key", "show", "--key", str(key), "--json", cwd=tmp_path, env={})
    check("p2phost key show --json", shown)
    assert shown["public_key"].startswith("ed25519:") and shown["path"] == str(key)


def test_registry_token_list(tmp_path: Path) -> None:
    data = tmp_path / "data"
    from p2phost_registry import Store

    Store(data).close()  # a registry's directory (any other is refused: tests/registry)
    run_cli("registry", "token", "create", "--data", str(data), "--owner", "me", "--scope",
            "shout-codec", check=True)
    listed = output("registry", "token", "list", "--data", str(data), "--json", cwd=tmp_path,
                    env={})
    check("p2phost registry token list --json", listed)
    assert [(t["owner"], t["scopes"]) for t in listed["tokens"]] == [("me", ["shout-codec"])]
