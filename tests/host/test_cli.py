"""The p2phost command as a user runs it: real subprocesses in real project folders."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.conftest import run_cli, write_project


def test_version_and_help() -> None:
    out = run_cli("--version", check=True).stdout
    assert out.startswith("p2phost 0.1.0 (host-api 1.1")
    for command in ("init", "doctor", "run", "plugin"):
        assert command in run_cli("--help", check=True).stdout
        assert run_cli(command, "--help").returncode == 0


def test_init_writes_a_manifest_and_an_identity(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path / "alice"), check=True)
    manifest = (tmp_path / "alice" / "p2phost.toml").read_text()
    assert 'name = "alice"' in manifest and "tcp-transport" in manifest
    key = tmp_path / "alice" / ".p2phost" / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "peer id: " in result.stdout
    again = run_cli("init", str(tmp_path / "alice"))
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr


def test_run_check_loads_declared_plugins(tmp_path: Path,
                                          fixture_wheels: dict[str, Path]) -> None:
    # No listen address: no transport plugin is declared here to serve one.
    root = write_project(tmp_path / "p", ["needs-hello"], listen=(),
                         wheels=[fixture_wheels["hello-app"], fixture_wheels["needs-hello"]])
    result = run_cli("run", "--check", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "loaded hello-app 1.2.0 [app]  (required by another plugin)" in result.stdout
    assert "loaded needs-hello 1.2.0 [app]" in result.stdout
    assert "apps: hello" in result.stdout


def test_user_errors_are_one_message_and_exit_2(tmp_path: Path,
                                                fixture_wheels: dict[str, Path]) -> None:
    root = write_project(tmp_path / "p", ["broken-import"],
                         wheels=[fixture_wheels["broken-import"]])
    result = run_cli("run", "--check", cwd=root)
    assert result.returncode == 2
    assert "error: plugin 'broken-import' failed to import" in result.stderr
    assert "Traceback" not in result.stderr
    debug = run_cli("--debug", "run", "--check", cwd=root)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    (root / "p2phost.toml").write_text("[plugins]\necho = '>>1'\n")
    bad = run_cli("run", "--check", cwd=root)
    assert bad.returncode == 2
    assert "p2phost.toml:2: plugins.echo: '>>1' is not a PEP 440 version specifier" in bad.stderr
    nowhere = run_cli("run", "--check", cwd=tmp_path)
    assert nowhere.returncode == 2 and "fix: p2phost init" in nowhere.stderr


def test_doctor_lists_all_problems(tmp_path: Path, fixture_wheels: dict[str, Path]) -> None:
    root = write_project(tmp_path / "p", ["echo", "future-plugin", "hello-app"],
                         config={"hello-app": {"greeting": 1}},
                         wheels=[fixture_wheels["future-plugin"], fixture_wheels["hello-app"]])
    result = run_cli("doctor", cwd=root)
    assert result.returncode == 1
    assert "plugin 'echo'" in result.stdout and "fix: p2phost plugin install echo" in result.stdout
    assert "needs host-api >=2.0" in result.stdout
    assert "config.hello-app.greeting: expected str" in result.stdout
    # and [node] listen has tcp://, which no declared transport serves
    assert "[node] listen: no transport plugin serves tcp://" in result.stdout
    assert "4 problem(s) found" in result.stdout
    write_project(root, ["hello-app"], wheels=[], listen=())
    healthy = run_cli("doctor", cwd=root)
    assert healthy.returncode == 0, healthy.stdout
    assert "plugins load: hello-app 1.2.0" in healthy.stdout


def test_plugin_list_and_info(tmp_path: Path, fixture_wheels: dict[str, Path]) -> None:
    root = write_project(tmp_path / "p", ["hello-app"],
                         wheels=[fixture_wheels["hello-app"], fixture_wheels["needs-hello"]])
    env = {"COLUMNS": "200"}
    listing = run_cli("plugin", "list", cwd=root, env=env, check=True).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert rows["hello-app"][1:3] == ["1.2.0", "app"] and rows["hello-app"][-1] == "yes"
    assert rows["needs-hello"][-1] == "no"
    info = run_cli("plugin", "info", "Hello_App", cwd=root, env=env, check=True).stdout
    assert "hello-app 1.2.0: A test plugin: hello-app" in info
    assert "greeting: str = 'hello'" in info
    missing = run_cli("plugin", "info", "nope", cwd=root)
    # A name no source knows: the fix does not suggest installing it.
    assert missing.returncode == 2 and "plugin 'nope' is not installed" in missing.stderr
    assert "fix:" in missing.stderr and "plugin install nope" not in missing.stderr
