"""One test per defect of issue 18, each through the CLI in a subprocess: fixes that point
the right way, "did you mean" for typos, upgrades beyond the range, the plugin environment
after kill -9, no-op installs, removing a transport in use, the security in use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import tomlkit

from tests.conftest import RunningRegistry, run_cli

from .conftest import cli_env, new_project, running_node


def _set(root: Path, table: str, key: str, value: object) -> None:
    path = root / "p2phost.toml"
    doc = tomlkit.parse(path.read_text())
    doc.setdefault(table, tomlkit.table())[key] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(doc))


# -- fixes that name the right plugin ---------------------------------------------------


def test_ping_to_an_unserved_scheme_names_the_plugin_that_serves_it(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    mem = run_cli("ping", "mem://elsewhere", cwd=root, env=env)
    assert mem.returncode == 2, mem.stderr
    assert "no transport plugin serves mem://" in mem.stderr
    assert "transports here: tcp:// (tcp-transport)" in mem.stderr
    assert "fix: p2phost plugin install memory-transport" in mem.stderr
    zap = run_cli("send", "zap://host/x", "echo", "{}", cwd=root, env=env)
    assert zap.returncode == 2
    assert "fix: p2phost plugin search zap --kind transport" in zap.stderr
    assert "tcp-transport" not in zap.stderr.split("fix:")[1]


def _swap(root: Path, env: dict[str, str], old: str, new: str) -> None:
    for args in (("plugin", "install", new, "--yes"), ("plugin", "remove", old, "--yes")):
        done = run_cli(*args, cwd=root, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_codec_mismatch_says_what_each_side_offers(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    alice = new_project(tmp_path / "alice", official_registry)
    bob = new_project(tmp_path / "bob", official_registry)
    _swap(bob, env, "json-codec", "msgpack-codec")
    with running_node(alice) as address:
        done = run_cli("ping", address, "--count", "1", cwd=bob, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no codec in common" in done.stderr and "the node runs" in done.stderr
    assert "application/json" in done.stderr and "msgpack" in done.stderr
    assert "codecs msgpack-codec" in done.stderr
    assert "check the address" not in done.stderr


def test_a_security_mismatch_says_what_this_side_offers(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    alice = new_project(tmp_path / "alice", official_registry)
    bob = new_project(tmp_path / "bob", official_registry)
    _swap(bob, env, "noise-security", "tls-security")
    with running_node(alice) as address:
        done = run_cli("ping", address, "--count", "1", cwd=bob, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "do not agree on how to secure the connection" in done.stderr
    assert "this project offers security tls-security" in done.stderr
    assert "check the address" not in done.stderr


def test_a_plaintext_project_dialling_a_secured_node_is_told_of_the_mismatch(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    # The node closes without a GOODBYE (it read the plaintext hello as a broken Noise
    # handshake): the dialler, with no security plugin, names what it lacks.
    env = cli_env(official_registry, tmp_path / "cache")
    alice = new_project(tmp_path / "alice", official_registry)
    bob = new_project(tmp_path / "bob", official_registry)
    removed = run_cli("plugin", "remove", "noise-security", "--yes", cwd=bob, env=env,
                      timeout=120)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    with running_node(alice) as address:
        done = run_cli("ping", address, "--count", "1", cwd=bob, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the two sides may not agree on how to secure the connection" in done.stderr
    assert "this project offers security none" in done.stderr
    assert "p2phost plugin install noise-security" in done.stderr
    assert "(see above)" not in done.stderr


def test_a_refusal_by_the_trust_policy_says_which_peer_to_trust(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    alice = new_project(tmp_path / "alice", official_registry)
    bob = new_project(tmp_path / "bob", official_registry)
    _set(alice, "trust", "policy", "allowlist")
    bob_id = run_cli("id", cwd=bob, check=True).stdout.strip()
    with running_node(alice) as address:
        done = run_cli("ping", address, "--count", "1", cwd=bob, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused by the trust policy" in done.stderr
    assert "the node runs, but does not trust this project" in done.stderr
    assert f"fix: in the node's project: p2phost trust add {bob_id}" in done.stderr
    assert "secure the connection" not in done.stderr


# -- removing what the node needs; two security plugins ---------------------------------


def test_removing_the_transport_listen_needs_is_refused_and_doctor_sees_it(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    root = new_project(tmp_path / "alice", official_registry)
    refused = run_cli("plugin", "remove", "tcp-transport", "--yes", cwd=root, env=env)
    assert refused.returncode == 2
    assert "cannot remove tcp-transport: [node] listen has 'tcp://127.0.0.1:0'" \
        in refused.stderr
    assert "fix: change [node] listen in p2phost.toml first, or p2phost plugin remove " \
           "--force tcp-transport" in refused.stderr
    assert "tcp-transport" in (root / "p2phost.toml").read_text()
    forced = run_cli("plugin", "remove", "tcp-transport", "--yes", "--force", cwd=root, env=env)
    assert forced.returncode == 0, forced.stderr
    doctor = run_cli("doctor", cwd=root, env=env)
    assert doctor.returncode == 1
    assert "[node] listen: no transport plugin serves tcp://" in doctor.stdout
    assert "fix: p2phost plugin install tcp-transport" in doctor.stdout
    assert "no problems found" not in doctor.stdout


def test_doctor_checks_the_schemes_of_static_discovery_peers(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    root = new_project(tmp_path / "alice", official_registry)
    manifest = root / "p2phost.toml"
    text = manifest.read_text()
    assert "\npeers = []\n" in text  # the project's own [config.static-discovery] table
    manifest.write_text(text.replace(
        "\npeers = []\n", '\npeers = ["tcp://127.0.0.1:7400", "ws://127.0.0.1:7401"]\n'))
    doctor = run_cli("doctor", cwd=root, env=env)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "[config.static-discovery] peers tcp://127.0.0.1:7400: served by" in doctor.stdout
    assert "[config.static-discovery] peers: no transport plugin serves ws://" in doctor.stdout
    assert "fix: p2phost plugin search ws --kind transport" in doctor.stdout


def test_remove_needs_yes_without_a_terminal(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    root = new_project(tmp_path / "alice", official_registry, "chat")
    done = run_cli("plugin", "remove", "chat", cwd=root, env=env)
    assert done.returncode == 2
    assert "removing plugins needs a confirmation" in done.stderr
    assert "fix: re-run with --yes" in done.stderr
    assert "chat" in (root / "p2phost.toml").read_text()


def test_two_security_plugins_one_unused_is_a_doctor_problem(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    root = new_project(tmp_path / "alice", official_registry, "tls-security")
    check = run_cli("run", "--check", "--json", cwd=root, env=env)
    assert check.returncode == 0, check.stderr
    security = json.loads(check.stdout)["security"]
    used, unused = security["in_use"], security["unused"]
    assert {used, *unused} == {"noise", "tls"} and len(unused) == 1
    names = {"noise": "noise-security", "tls": "tls-security"}
    doctor = run_cli("doctor", cwd=root, env=env)
    assert doctor.returncode == 1
    assert f"a node uses one: {names[used]}; {names[unused[0]]} is never used" in doctor.stdout
    assert f"fix: p2phost plugin remove {names[unused[0]]}" in doctor.stdout
    text = run_cli("run", "--check", cwd=root, env=env).stdout
    assert f"security: {used} on every stream connection" in text
    assert f"warning: security plugin {unused[0]!r} is loaded but unused" in text


def test_peers_shows_the_security_of_each_connection(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    env = cli_env(official_registry, tmp_path / "cache")
    alice = new_project(tmp_path / "alice", official_registry)
    bob = new_project(tmp_path / "bob", official_registry)
    with running_node(alice) as address:
        _set(bob, "config", "static-discovery", {"peers": [address]})
        with running_node(bob):
            deadline = time.monotonic() + 20
            answer: dict[str, object] = {}
            while time.monotonic() < deadline:
                done = run_cli("peers", "--json", cwd=bob, env=env)
                answer = json.loads(done.stdout) if done.returncode == 0 else {}
                if answer.get("peers"):
                    break
                time.sleep(0.2)
            assert answer.get("peers"), answer
            text = run_cli("peers", cwd=bob, env=env, check=True).stdout
    peer = answer["peers"][0]  # type: ignore[index]
    assert peer["security"] == "noise" and peer["codec"] == "application/json"
    assert "security: noise" in text


# -- names: "did you mean" --------------------------------------------------------------


def _installer_project(tmp_path: Path, registry: RunningRegistry, plugins: str
                       ) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "p2phost.toml").write_text(f'[node]\nname = "p"\nlisten = []\n\n[plugins]\n'
                                       f'{plugins}\n')
    env = cli_env(registry, tmp_path / "cache")
    done = run_cli("plugin", "install", "--yes", cwd=root, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return root, env


def test_upgrade_and_remove_of_a_typo_say_did_you_mean(
        tmp_path: Path, registry: RunningRegistry) -> None:
    root, env = _installer_project(tmp_path, registry, 'alpha = "*"')
    upgrade = run_cli("plugin", "upgrade", "alpah", "--yes", cwd=root, env=env)
    assert upgrade.returncode == 2
    assert "plugin 'alpah' is not installed in this project; did you mean 'alpha'?" \
        in upgrade.stderr
    assert "fix: p2phost plugin upgrade alpha" in upgrade.stderr
    assert "plugin install alpah" not in upgrade.stderr
    remove = run_cli("plugin", "remove", "alpah", "--yes", cwd=root, env=env)
    assert remove.returncode == 2 and "did you mean 'alpha'?" in remove.stderr
    assert "fix: p2phost plugin remove alpha" in remove.stderr


def test_config_and_manifest_typos_say_did_you_mean(
        tmp_path: Path, registry: RunningRegistry) -> None:
    root, env = _installer_project(tmp_path, registry, 'alpha = "*"')
    manifest = root / "p2phost.toml"
    manifest.write_text(manifest.read_text() + '\n[config.alpah]\nx = 1\n')
    config = run_cli("run", "--check", cwd=root, env=env)
    assert config.returncode == 2
    assert "configures plugin 'alpah', which [plugins] does not declare; did you mean " \
           "'alpha'?" in config.stderr
    assert "fix: rename [config.alpah] to [config.alpha]" in config.stderr
    manifest.write_text(manifest.read_text().replace("[config.alpah]\nx = 1\n", "")
                        .replace('alpha = "*"', 'alpah = "*"'))
    doctor = run_cli("doctor", cwd=root, env=env)
    assert doctor.returncode == 1, doctor.stdout
    assert "plugin 'alpah' (declared at p2phost.toml:6) is not installed; did you mean " \
           "'alpha'?" in doctor.stdout
    assert "fix: rename alpah to alpha at p2phost.toml:6" in doctor.stdout


def test_upgrade_tells_about_a_release_outside_the_range_and_latest_takes_it(
        tmp_path: Path, registry: RunningRegistry) -> None:
    root, env = _installer_project(tmp_path, registry, 'alpha = "<1.1"')
    upgrade = run_cli("plugin", "upgrade", "--yes", cwd=root, env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "nothing to do" in upgrade.stdout
    assert "alpha 1.1.0 is out of the range p2phost.toml allows (newest within it: 1.0.0); " \
           "take it with: p2phost plugin upgrade --latest alpha" in upgrade.stdout
    latest = run_cli("plugin", "upgrade", "--latest", "alpha", "--yes", cwd=root, env=env)
    assert latest.returncode == 0, latest.stderr
    assert "alpha 1.0.0 -> 1.1.0" in latest.stdout
    assert 'alpha = ">=1.1.0,<2"' in (root / "p2phost.toml").read_text()
    again = run_cli("plugin", "upgrade", "--yes", cwd=root, env=env)
    assert "out of the range" not in again.stdout


# -- the plugin environment ---------------------------------------------------------------

_KILLED_WHILE_STAGING = """\
import os, signal, sys
import p2phost._install._installer as installer
link = installer.link_wheel
def link_then_die(root, sha256, wheel, target):
    link(root, sha256, wheel, target)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 with the new generation half built
installer.link_wheel = link_then_die
from p2phost._cli.main import run
run(sys.argv[1:])
"""


def test_kill_9_while_staging_leaves_what_doctor_reports_and_sync_removes(
        tmp_path: Path, registry: RunningRegistry) -> None:
    root, env = _installer_project(tmp_path, registry, 'alpha = "*"')
    env_dir = root / ".p2phost" / "env"
    before = os.readlink(env_dir / "current")
    killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_STAGING, "plugin", "install",
                             "bulky", "--yes"], cwd=root, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    leftovers = [p.name for p in env_dir.glob("gen-*") if p.name != before]
    assert leftovers, "the kill left no half-built generation to find"
    doctor = run_cli("doctor", cwd=root, env=env)
    assert doctor.returncode == 1
    assert f"1 leftover(s) of an interrupted install in {env_dir}" in doctor.stdout
    assert leftovers[0] in doctor.stdout and "MiB" in doctor.stdout
    assert "fix: p2phost plugin sync" in doctor.stdout
    report = json.loads(run_cli("doctor", "--json", cwd=root, env=env).stdout)
    assert any("leftover" in c["message"] and c["status"] == "problem"
               for c in report["checks"])
    sync = run_cli("plugin", "sync", cwd=root, env=env)
    assert sync.returncode == 0, sync.stderr
    assert f"removed {env_dir / leftovers[0]}" in sync.stdout
    assert "left by an interrupted install" in sync.stdout
    assert sorted(p.name for p in env_dir.iterdir()) == ["current", before]
    assert run_cli("doctor", cwd=root, env=env).returncode == 0


def test_a_no_op_install_builds_no_new_generation(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    # The resolver's order of these plugins is not the lock's (sorted by name).
    root = new_project(tmp_path / "alice", official_registry, "chat")
    env = cli_env(official_registry, tmp_path / "cache")
    current = root / ".p2phost" / "env" / "current"
    generation = os.readlink(current)
    for _ in range(2):
        done = run_cli("plugin", "install", "--yes", cwd=root, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "nothing to do" in done.stdout
        assert os.readlink(current) == generation


def test_trust_remove_of_a_typo_says_did_you_mean(tmp_path: Path) -> None:
    run_cli("init", str(tmp_path / "alice"), check=True)
    root = tmp_path / "alice"
    bob = run_cli("init", str(tmp_path / "bob"), check=True).stdout
    bob_id = bob.split("peer id: ")[1].split()[0]
    run_cli("trust", "add", bob_id, "--name", "bobby", cwd=root, check=True)
    done = run_cli("trust", "remove", "boby", cwd=root)
    assert done.returncode == 2, done.stderr
    assert "no trusted peer has the id or name 'boby'; did you mean 'bobby'?" in done.stderr
    assert "fix: p2phost trust remove bobby" in done.stderr


# -- found by an outside user (session 6) ------------------------------------------------


def test_an_address_without_a_scheme_is_told_to_be_a_url_not_to_install_tcp(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    done = run_cli("ping", "127.0.0.1:7400", "--count", "1", cwd=root, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "`scheme://` expected" in done.stderr, done.stderr
    assert "fix: write the address as tcp://127.0.0.1:7400" in done.stderr, done.stderr
    assert "plugin install tcp-transport" not in done.stderr


def test_run_names_the_search_for_a_connect_scheme_it_cannot_serve(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    _set(root, "node", "connect", ["ws://127.0.0.1:9"])
    process = subprocess.Popen([sys.executable, "-m", "p2phost", "run"], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        for line in process.stdout:  # the node logs the failed dial once it started
            seen.append(line)
            if "cannot connect to ws://" in line or time.monotonic() > deadline:
                break
    finally:
        process.terminate()
        process.wait(timeout=15)
    warning = next(li for li in seen if "cannot connect to ws://" in li)
    assert "fix: p2phost plugin search ws --kind transport" in warning
    assert "tcp-transport" not in warning.split("fix:")[1]


def test_inbox_list_without_an_inbox_does_not_send_you_back_to_itself(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    done = run_cli("inbox", "list", cwd=root, env=env)
    assert done.returncode == 2
    assert "this node has no inbox" in done.stderr
    assert "fix: p2phost inbox list" not in done.stderr
    assert "fix: add a broker or database URL to [node] listen" in done.stderr


def test_install_of_a_plugin_whose_config_table_is_written_already(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    # As docs/overlay.md shows them: [plugins] and [config.NAME] pasted, then installed.
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    with (root / "p2phost.toml").open("a") as manifest:
        manifest.write('\n[config.chat]\n\n[config.memory-transport]\n')
    partial = run_cli("plugin", "install", "chat", "--yes", cwd=root, env=env, timeout=120)
    assert partial.returncode == 2  # memory-transport's table is still an error
    assert "[config.memory-transport]: configures plugin 'memory-transport'" in partial.stderr
    done = run_cli("plugin", "install", "chat", "memory-transport", "--yes", cwd=root, env=env,
                   timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_cli("doctor", cwd=root, env=env).returncode == 0


def test_plugin_info_of_an_unknown_name_never_suggests_installing_it(
        tmp_path: Path, official_registry: RunningRegistry) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    done = run_cli("plugin", "info", "ech", cwd=root, env=env)
    assert done.returncode == 2, done.stderr
    fix = done.stderr.split("fix: ")[1]
    assert "install ech" not in fix, done.stderr
