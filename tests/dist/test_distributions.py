"""The three distributions as a user installs them: wheels into fresh venvs, no checkout.

A node venv gets only ``p2phost`` (which brings ``p2phost-sdk``) and installs the official
plugins from the built-in source with no registry anywhere; an author venv gets only
``p2phost-sdk``; a registry venv ``p2phost[registry]``, with no build tools.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2phost._keys import load_key, sign_file
from tests.conftest import OFFICIAL, build_wheels, run_cli, start_registry, stop_registry
from tests.dist.conftest import Built, RunningNode, Venv, copy_builtin, make_venv

pytestmark = pytest.mark.slow

DEFAULT_PLUGINS = {"tcp-transport", "noise-security", "json-codec", "static-discovery", "echo"}


def _lock(project: Path) -> dict[str, Any]:
    return tomllib.loads((project / "p2phost.lock").read_text())


def _new_project(venv: Venv, name: str, **env: str) -> Path:
    project = venv.home / name
    done = venv.p2phost("init", str(project), "--listen", "tcp://127.0.0.1:0", env=env)
    assert done.returncode == 0, done.stderr
    return project


def test_a_fresh_venv_installs_official_plugins_offline_and_runs_two_nodes(
        node_venv: Venv, built: Built, run_node: Callable[[Venv, Path], RunningNode]) -> None:
    where = node_venv.run("python", "-c", "import p2phost; print(p2phost.__file__)")
    assert str(node_venv.root) in where.stdout  # the wheel, not the checkout
    projects = {}
    for name in ("alice", "bob"):
        project = _new_project(node_venv, name)
        for args in (("plugin", "install", "--yes"), ("plugin", "install", "--yes", "chat")):
            done = node_venv.p2phost(*args, cwd=project)
            assert done.returncode == 0, done.stderr
            assert "warning" not in done.stderr and "not signed" not in done.stderr
        lock = _lock(project)
        assert {p["name"] for p in lock["plugin"]} == DEFAULT_PLUGINS | {"chat"}
        assert {p["source"] for p in lock["plugin"]} == {"built-in"}
        assert {p["publisher_key"] for p in lock["plugin"]} == {built.release_key}
        projects[name] = project
    info = node_venv.p2phost("plugin", "info", "chat", cwd=projects["alice"])
    assert "distribution: p2phost-chat" in info.stdout and "source:       built-in" in info.stdout

    alice = run_node(node_venv, projects["alice"])
    bob = projects["bob"]
    ping = node_venv.p2phost("ping", alice.address, "--count", "3", cwd=bob)
    assert ping.returncode == 0 and "3 replies" in ping.stdout, ping.stdout + ping.stderr
    reply = node_venv.p2phost("send", alice.address, "echo", '{"text": "hello alice"}',
                              "--request", cwd=bob)
    assert json.loads(reply.stdout.splitlines()[0]) == {"text": "hello alice"}
    chat = node_venv.p2phost("send", alice.address, "chat", '{"text": "hi from bob"}', cwd=bob)
    assert chat.returncode == 0, chat.stderr
    _wait(lambda: "hi from bob" in alice.output())


def _wait(condition: Callable[[], bool], timeout: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_sdk_stands_alone_with_its_pytest_plugin(
        built: Built, tmp_path: Path) -> None:
    # An author's venv: the SDK with its test extra, and a plugin that depends only on it.
    venv = make_venv(tmp_path, built, "p2phost-sdk[testing]", "p2phost-json-codec")
    alone = venv.run("python", "-c", "import p2phost_sdk, p2phost_sdk.testing; import p2phost")
    assert "No module named 'p2phost'" in alone.stderr
    tests = venv.home / "test_plugin.py"
    # No conftest: the kits' fixtures (app_network) come from the SDK's pytest11 plugin alone.
    tests.write_text(
        "import pytest\n"
        "from p2phost_json_codec import JsonCodec\n"
        "from p2phost_sdk.testing.codec import CodecConformance\n\n\n"
        "class TestJson(CodecConformance):\n"
        "    @pytest.fixture\n"
        "    def codec(self):\n"
        "        return JsonCodec()\n\n\n"
        "async def test_app_network_comes_from_the_plugin(app_network):\n"
        "    pass\n")
    ran = venv.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                   "-o", "asyncio_mode=auto", str(tests))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert " passed" in ran.stdout
    # The app kit needs real nodes, which only an installed host provides: it says so.
    assert "pip install p2phost" in ran.stdout


def test_registry_commands_without_the_server_say_what_to_install(node_venv: Venv) -> None:
    done = node_venv.p2phost("registry", "serve", "--port", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: p2phost registry needs the registry server, which is not installed: "
        "pip install 'p2phost[registry]'"]


def test_seed_without_build_tools_then_install_from_the_registry(
        built: Built, node_venv: Venv, tmp_path: Path) -> None:
    venv = make_venv(tmp_path, built, "p2phost[registry]")
    assert venv.run("python", "-c", "import hatchling").returncode != 0
    data = venv.home / "registry"
    seeded = venv.p2phost("registry", "seed", "--data", str(data))
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    official = len(list(OFFICIAL.glob("*/pyproject.toml")))
    # and p2phost-sdk (from the built-in source) and p2phost (inside p2phost-registry's wheel)
    assert f"{official + 2} files published" in seeded.stdout, seeded.stdout
    rest = venv.p2phost("registry", "seed", "--data", str(data), str(built.root))
    assert "1 files published, 2 already there, 0 failed" in rest.stdout, rest.stdout
    project = built.root.parent / "seed-project-src"
    building = venv.p2phost("registry", "seed", "--data", str(data),
                            str(Path(__file__).parents[2] / "official-plugins" / "echo"))
    assert building.returncode == 1 and "pip install build" in building.stdout
    assert not project.exists()

    registry = start_registry(data)
    try:
        simple = _get_json(f"{registry.url}/simple/")
        names = {p["name"] for p in simple["projects"]}
        assert {"p2phost-echo", "p2phost-tcp-transport", "p2phost-sdk", "p2phost",
                "p2phost-registry"} <= names
        assert not names & {"echo", "chat", "json-codec"}  # never a name PyPI has for another
        page = _get_json(f"{registry.url}/simple/p2phost-echo/")
        assert page["name"] == "p2phost-echo" and page["files"]
        for own in ("p2phost", "p2phost-sdk", "p2phost-registry"):  # signed too
            record = _get_json(f"{registry.url}/api/v1/plugins/{own}")
            assert record["versions"][0]["files"][0]["publisher_key"] == built.release_key
        plugin = _get_json(f"{registry.url}/api/v1/plugins/echo")
        assert plugin["distribution"] == "p2phost-echo"
        assert plugin["versions"][0]["files"][0]["publisher_key"] == built.release_key
        found = _get_json(f"{registry.url}/api/v1/plugins?q=p2phost")
        assert "p2phost-sdk" not in {p["name"] for p in found["plugins"]}

        # plugin-authoring.md's first install step, with a real pip and no other index.
        target = tmp_path / "author"
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--isolated", "--no-deps", "--target",
             str(target), "--index-url", f"{registry.url}/simple/", "p2phost-sdk", "p2phost"],
            capture_output=True, text=True, timeout=300)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        assert (target / "p2phost" / "_builtin").is_dir() and (target / "p2phost_sdk").is_dir()

        user = _new_project(node_venv, "from-registry")
        done = node_venv.p2phost("plugin", "install", "--yes", cwd=user,
                                 env={"P2PHOST_REGISTRY": registry.url})
        assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
        assert {p["source"] for p in _lock(user)["plugin"]} == {registry.url}
    finally:
        stop_registry(registry)


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_registry_that_is_down_falls_back_to_the_built_in_source_saying_so_once(
        node_venv: Venv) -> None:
    project = _new_project(node_venv, "registry-down")
    done = node_venv.p2phost("plugin", "install", "--yes", cwd=project,
                             env={"P2PHOST_REGISTRY": "http://127.0.0.1:9", "P2PHOST_TIMEOUT": "2"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("did not answer") == 1, done.stderr
    assert "built-in source" in done.stderr
    assert {p["source"] for p in _lock(project)["plugin"]} == {"built-in"}


def test_a_tampered_or_missing_built_in_wheel_is_refused(
        node_venv: Venv, tmp_path: Path) -> None:
    tampered_dir = copy_builtin(node_venv, tmp_path / "tampered")
    echo = next(tampered_dir.glob("p2phost_echo-*.whl"))
    echo.write_bytes(echo.read_bytes() + b"\0")
    project = _new_project(node_venv, "tampered")
    tampered = node_venv.p2phost("plugin", "install", "--yes", cwd=project,
                                 env={"P2PHOST_BUILTIN_DIR": str(tampered_dir)})
    assert tampered.returncode != 0
    assert "the built-in wheel of echo is refused" in tampered.stderr
    assert "changed after it was signed" in tampered.stderr
    assert not (project / "p2phost.lock").exists()

    missing_dir = copy_builtin(node_venv, tmp_path / "missing")
    next(missing_dir.glob("p2phost_chat-*.whl")).unlink()
    missing = node_venv.p2phost("plugin", "install", "--yes", "chat", cwd=project,
                                env={"P2PHOST_BUILTIN_DIR": str(missing_dir)})
    assert missing.returncode != 0
    assert "no plugin named 'chat' in the built-in source" in missing.stderr


def test_a_typo_of_a_built_in_plugin_says_did_you_mean(built: Built, tmp_path: Path) -> None:
    # The built-in source alone (no registry, whose 404 says "did you mean" itself).
    env = {"P2PHOST_BUILTIN_DIR": str(built.root / "plugins")}
    run_cli("init", str(tmp_path / "typo"), check=True)
    done = run_cli("plugin", "install", "tcp-transprt", "--yes", cwd=tmp_path / "typo", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no plugin named 'tcp-transprt' in the built-in source; did you mean " \
           "'tcp-transport'?" in done.stderr
    assert "fix: p2phost plugin install tcp-transport" in done.stderr
    far = run_cli("plugin", "install", "zzz-nothing-like", "--yes", cwd=tmp_path / "typo",
                  env=env)
    assert far.returncode == 2 and "did you mean" not in far.stderr
    assert "fix: p2phost plugin search zzz-nothing-like" in far.stderr


def test_an_official_plugin_from_a_registry_must_carry_the_release_key(
        node_venv: Venv, tmp_path: Path) -> None:
    # Built here from its project, unsigned: what an impostor's registry would serve.
    registry = start_registry(tmp_path / "data", [OFFICIAL / "echo", OFFICIAL / "chat"])
    try:
        project = _new_project(node_venv, "impostor")
        env = {"P2PHOST_REGISTRY": registry.url}
        refused = node_venv.p2phost("plugin", "install", "--yes", cwd=project, env=env)
        assert refused.returncode != 0
        assert "echo is an official p2phost plugin" in refused.stderr
        assert not (project / "p2phost.lock").exists()
        accepted = node_venv.p2phost("plugin", "install", "--yes", "--trust-new-key", "chat",
                                     cwd=project, env=env)
        assert accepted.returncode == 0, accepted.stderr
        # Two unsigned plugins, one warning naming both.
        assert accepted.stderr.count("not signed") == 1, accepted.stderr
        assert "echo 1.0.0, chat 1.0.0" in accepted.stderr or \
            "chat 1.0.0, echo 1.0.0" in accepted.stderr
    finally:
        stop_registry(registry)


def test_a_registry_with_a_newer_official_version_wins(
        built: Built, node_venv: Venv, tmp_path: Path) -> None:
    project = tmp_path / "echo"
    shutil.copytree(OFFICIAL / "echo", project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "1.0.0"', 'version = "1.1.0"'))
    wheel = build_wheels([project], tmp_path / "wheels")["echo"]
    wheel.with_name(wheel.name + ".sig").write_bytes(
        sign_file(load_key(built.key_file), wheel).to_bytes())  # as the project would sign it
    registry = start_registry(tmp_path / "data", [wheel])
    try:
        user = _new_project(node_venv, "newer")
        done = node_venv.p2phost("plugin", "install", "--yes", cwd=user,
                                 env={"P2PHOST_REGISTRY": registry.url})
        assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
        sources = {p["name"]: (p["version"], p["source"]) for p in _lock(user)["plugin"]}
        assert sources["echo"] == ("1.1.0", registry.url)
        assert sources["tcp-transport"] == ("1.0.0", "built-in")  # the registry lacks it
    finally:
        stop_registry(registry)
