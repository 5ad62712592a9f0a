"""The listen address's scheme and its transport (the outsider report, D1): ``init``
declares the transport for it, and ``run --check``, ``run`` and ``doctor`` refuse one no
declared transport serves with the same error and fix."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

from p2phost._schemes import OFFICIAL_TRANSPORTS
from tests.conftest import OFFICIAL, RunningRegistry, run_cli

from .conftest import cli_env, new_project


def test_the_table_init_uses_matches_the_official_plugins() -> None:
    served = {}
    for pyproject in OFFICIAL.glob("*/pyproject.toml"):
        meta = tomllib.loads(pyproject.read_text())
        name = meta["project"]["name"].removeprefix("p2phost-")
        for scheme in meta["tool"]["p2phost"]["plugin"].get("provides", {}).get("schemes", []):
            served[scheme] = name
    assert {s: n for s, n in served.items() if not s.startswith("relay+")} == \
        OFFICIAL_TRANSPORTS


@pytest.mark.parametrize(("listen", "plugin"), [
    ("redis://127.0.0.1:6379/0", "redis-transport"), ("nats://127.0.0.1:4222", "nats-transport"),
    ("amqp://guest:guest@127.0.0.1:5672/", "amqp-transport"),
    ("postgresql://127.0.0.1:5432/test", "postgres-transport"), ("tcp://127.0.0.1:0",
                                                                 "tcp-transport"),
    # a path, as websocket-transport takes it (and doctor, checking the form, too)
    ("ws://127.0.0.1:7400/p2p", "websocket-transport")])
def test_init_declares_the_transport_of_the_listen_scheme(tmp_path: Path, listen: str,
                                                          plugin: str) -> None:
    run_cli("init", str(tmp_path / "p"), "--listen", listen, check=True)
    plugins = tomllib.loads((tmp_path / "p" / "p2phost.toml").read_text())["plugins"]
    assert plugin in plugins
    assert ("tcp-transport" in plugins) == (plugin == "tcp-transport")


def test_run_check_refuses_a_listen_scheme_no_transport_serves(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    manifest = root / "p2phost.toml"
    manifest.write_text(manifest.read_text().replace("tcp://127.0.0.1:0",
                                                     "redis://127.0.0.1:6379/0"))
    check = run_cli("run", "--check", cwd=root, env=env)
    run = run_cli("run", cwd=root, env=env, timeout=60)
    doctor = run_cli("doctor", cwd=root, env=env)
    assert check.returncode == 2 and run.returncode == 2, check.stderr + run.stderr
    said = "no transport plugin serves redis:// in 'redis://127.0.0.1:6379/0'"
    assert said in check.stderr and said in run.stderr and said in doctor.stdout
    fix = check.stderr.split("fix: ")[1].strip()
    assert fix in run.stderr and fix in doctor.stdout, (fix, run.stderr, doctor.stdout)


def test_doctor_finds_the_malformed_address_run_check_refuses(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    # A served scheme, a broken form: doctor said "served by tcp-transport" and "no
    # problems found", then the start refused it.
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    manifest = root / "p2phost.toml"
    manifest.write_text(manifest.read_text().replace("tcp://127.0.0.1:0", "tcp://::1:7400"))
    check = run_cli("run", "--check", cwd=root, env=env)
    doctor = run_cli("doctor", cwd=root, env=env)
    assert check.returncode == 2 and doctor.returncode == 1, check.stderr + doctor.stdout
    said = "[node] listen: bad address 'tcp://::1:7400': an IPv6 host goes in brackets: " \
        "tcp://[::1]:7400"
    assert said in check.stderr and said in doctor.stdout, check.stderr + doctor.stdout
    fix = "fix: in [node] listen of p2phost.toml, write the address as tcp://"
    assert fix in check.stderr and fix in doctor.stdout
    assert "no problems found" not in doctor.stdout



@pytest.mark.parametrize("listen", ["redis:/bad", "127.0.0.1:7400", "tcp:/x",
                                    "redis://127.0.0.1:6379/abc", "tcp://127.0.0.1:7400 ",
                                    "tcp://nohost:", "tcp://::1:7400"])
def test_init_refuses_a_malformed_listen_address_and_writes_nothing(
        tmp_path: Path, listen: str) -> None:
    done = run_cli("init", str(tmp_path / "p"), "--listen", listen)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bad address" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "p").exists()
    fix = shlex.split(done.stderr.split("fix: ", 1)[1])  # as a shell reads it
    # The fix, followed, works: init takes the address it suggests.
    assert fix[:2] == ["p2phost", "init"] and fix[3] == "--listen", fix
    if "::1" in listen:  # the user's own IPv6 host, in brackets (not 127.0.0.1)
        assert fix[4] == "tcp://[::1]:7400", fix
    run_cli("init", str(tmp_path / "p"), "--listen", fix[4], check=True)
