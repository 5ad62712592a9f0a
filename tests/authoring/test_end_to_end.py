"""A new plugin author's whole path, for every kind, with real processes throughout.

``plugin new`` -> the generated tests pass -> ``plugin check`` -> ``plugin build`` ->
``plugin publish`` to a real registry -> ``plugin install`` in a separate project -> a node
runs with it (for a transport: two nodes exchange messages over it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from tests.conftest import RunningRegistry, run_cli
from tests.runtime.processes import RunningNode

from .conftest import BASE_PLUGINS, KINDS, plugin_name


@contextmanager
def running_node(project: Path) -> Iterator[RunningNode]:
    """``p2phost run`` in ``project``, stopped (SIGTERM) when the block ends."""
    node = RunningNode(project)
    try:
        yield node
    finally:
        node.stop()


def node_project(root: Path, registry: str, *, listen: list[str], plugins: list[str],
                 config: dict[str, Any] | None = None) -> Path:
    """A p2phost project at ``root`` whose ``plugins`` are installed from ``registry``."""
    root.mkdir(parents=True)
    path = root / "p2phost.toml"
    path.write_text(tomlkit.dumps({"node": {"name": root.name, "listen": listen},
                                   "registry": {"url": registry}, "plugins": {}}))
    result = run_cli("plugin", "install", *plugins, "--yes", cwd=root, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for plugin in plugins:
        assert f"+ {plugin} " in result.stdout
    if config:  # a plugin's config may only name an installed plugin
        manifest = tomlkit.parse(path.read_text())
        manifest["config"] = config
        path.write_text(tomlkit.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def token(authoring_registry: RunningRegistry) -> str:
    scopes = [a for kind in KINDS for a in ("--scope", plugin_name(kind))]
    out = run_cli("registry", "token", "create", "--data", str(authoring_registry.data),
                  "--owner", "ada", *scopes, check=True).stdout
    return out.split()[-1]


def author(kind: str, generated: dict[str, Path], registry: RunningRegistry, token: str,
           tmp_path: Path) -> str:
    """As the author: test, check, build and publish the generated plugin of ``kind``."""
    project = tmp_path / plugin_name(kind)
    shutil.copytree(generated[kind], project)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                           cwd=project, capture_output=True, text=True, timeout=300, env=env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    check = run_cli("plugin", "check", cwd=project, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"✓ {kind} conformance kit:" in check.stdout and "check passed" in check.stdout

    build = run_cli("plugin", "build", "--no-isolation", cwd=project, timeout=300)
    assert build.returncode == 0, build.stderr

    publish = run_cli("plugin", "publish", "--registry", registry.url, cwd=project,
                      env={"P2PHOST_TOKEN": token}, timeout=60)
    assert publish.returncode == 0, publish.stderr
    assert publish.stdout.strip().endswith(f"/plugins/{plugin_name(kind)}/1.0.0")
    return plugin_name(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_plugin_goes_from_template_to_a_running_node(
        kind: str, generated: dict[str, Path], authoring_registry: RunningRegistry, token: str,
        tmp_path: Path) -> None:
    name = author(kind, generated, authoring_registry, token, tmp_path)
    url = authoring_registry.url
    if kind == "discovery":
        shared = {name: {"directory": str(tmp_path / "meeting-place"), "interval": 0.2,
                         "expiry": 2.0}}
        plugins = [name, *BASE_PLUGINS]
        b = node_project(tmp_path / "b", url, listen=["tcp://127.0.0.1:0"], plugins=plugins,
                         config=shared)
        c = node_project(tmp_path / "c", url, listen=["tcp://127.0.0.1:0"], plugins=plugins,
                         config=shared)
        with running_node(b), running_node(c) as node_c:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                answer = run_cli("peers", "--json", cwd=b)
                peers = json.loads(answer.stdout)["peers"] if answer.returncode == 0 else []
                if any(p["peer_id"] == node_c.peer_id for p in peers):
                    break
                time.sleep(0.3)
            else:
                pytest.fail(f"b never found c through {name}: {answer.stdout}{answer.stderr}")
        return

    listen = {"transport": "shout://127.0.0.1:0"}.get(kind, "tcp://127.0.0.1:0")
    server_plugins = {
        "transport": [name, "json-codec", "echo"],
        "codec": [name, "tcp-transport", "echo"],  # its only codec
        "security": [name, *BASE_PLUGINS],
        "app": [name, "tcp-transport", "json-codec"],
    }[kind]
    client_plugins = {
        "transport": [name, "json-codec"],
        "codec": [name, "tcp-transport"],
        "security": [name, "tcp-transport", "json-codec"],
        "app": ["tcp-transport", "json-codec"],
    }[kind]
    server = node_project(tmp_path / "server", url, listen=[listen], plugins=server_plugins)
    client = node_project(tmp_path / "client", url, listen=[], plugins=client_plugins)
    with running_node(server) as node:
        address = node.address
        assert address.startswith(listen.split("://")[0] + "://")
        if kind == "app":
            sent = run_cli("send", address, "shout", '{"name": "ada"}', "--request",
                           cwd=client)
            assert sent.returncode == 0, sent.stderr
            reply = json.loads(sent.stdout)
            assert reply["text"] == "hello, ada" and reply["from"] == node.peer_id
        else:
            ping = run_cli("ping", address, "--count", "3", "--interval", "0", cwd=client)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            sent = run_cli("send", address, "echo", '{"over": "' + kind + '"}', "--request",
                           cwd=client)
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout) == {"over": kind}
    if kind == "security":
        assert "NOT authenticated" not in node.stderr, node.stderr
