"""Nodes as separate OS processes (``p2phost run`` in temp projects) over tcp-transport."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2phost._project import Project, runtime_dir
from p2phost._runtime import Node
from p2phost_sdk import RemoteError
from p2phost_sdk.testing.discovery import wait_until
from tests.conftest import run_cli, write_project
from tests.runtime.conftest import build_node
from tests.runtime.processes import RunningNode, free_port
from tests.runtime.rawpeer import closed_by_node, raw_tcp
from tests.runtime.test_bad_input import CASES, send_bad_input

BASIC = ["tcp-transport", "json-codec", "echo", "chat"]
# Small socket buffers: a backpressure test must not fit in the kernel's.
SMALL_TCP = {"buffer-size": 32 * 1024, "read-size": 64 * 1024}
ProjectMaker = Callable[..., Path]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, official_wheels: dict[str, Path],
            recorder_wheel: Path) -> ProjectMaker:
    """``project(name, plugins, config=..., listen=...)``: a project with wheels installed."""
    def make(name: str, plugins: list[str], **kwargs: Any) -> Path:
        wheels = [official_wheels[p] for p in plugins if p in official_wheels]
        if "recorder" in plugins:
            wheels.append(recorder_wheel)
        return write_project(tmp_path_factory.mktemp(name) / name, plugins, wheels=wheels,
                             name=name, **kwargs)
    return make


@pytest.fixture(scope="module")
def alice(project: ProjectMaker) -> Iterator[RunningNode]:
    """One node for the module: tcp, json, echo, chat and the recorder test app."""
    root = project("alice", [*BASIC, "recorder"], config={
        "recorder": {"delay": 0.002, "mailbox-size": 4}, "tcp-transport": SMALL_TCP})
    node = RunningNode(root)
    yield node
    assert node.stop() == 0


@pytest.fixture
async def client() -> AsyncIterator[Node]:
    node = build_node("tcp", listen=[], buffer_size=32 * 1024, outbox_limit=16 * 1024,
                      max_frame_size=16 * 1024 * 1024)
    await node.start()
    yield node
    await node.close()


def cli(node: RunningNode, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    done = run_cli(*args, cwd=node.root, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def test_id_ping_send_and_request(alice: RunningNode) -> None:
    assert cli(alice, "id")[1].strip() == alice.peer_id
    code, out, _ = cli(alice, "ping", alice.address, "--count", "3", "--interval", "0")
    assert code == 0, out
    assert out.count("reply from ") == 3 and "3 sent, 3 replies, 0 lost" in out
    assert "rtt min/median/max = " in out
    code, _, err = cli(alice, "send", alice.address, "chat", '{"text": "hi from the test"}')
    assert code == 0, err
    assert alice.wait_for("[chat] ").endswith(": hi from the test")
    code, out, _ = cli(alice, "send", alice.address, "echo", '{"a": [1, 2]}', "--request")
    assert (code, json.loads(out)) == (0, {"a": [1, 2]})


def test_send_takes_a_body_larger_than_a_shell_argument(alice: RunningNode,
                                                       tmp_path: Path) -> None:
    # 200 KiB: over the 128 KiB a single argv string may hold on Linux.
    big = {"a": "x" * 200_000}
    done = run_cli("send", alice.address, "echo", "-", "--request", cwd=alice.root,
                   input=json.dumps(big), timeout=30)
    assert done.returncode == 0, done.stderr + alice.stderr
    assert json.loads(done.stdout) == big
    (tmp_path / "body.json").write_text(json.dumps(big))
    code, out, err = cli(alice, "send", alice.address, "echo", f"@{tmp_path / 'body.json'}",
                         "--request")
    assert code == 0, err
    assert json.loads(out) == big
    code, _, err = cli(alice, "send", alice.address, "echo", f"@{tmp_path / 'nope.json'}")
    assert code == 2 and "cannot read the body from" in err and "fix:" in err


def test_cli_errors_are_one_clear_message(alice: RunningNode) -> None:
    code, _, err = cli(alice, "send", alice.address, "chat", '{"no": "text"}', "--request")
    assert code == 1 and "answered with an error: ValueError" in err
    code, _, err = cli(alice, "send", alice.address, "nope", "{}")
    assert code == 2 and "has no app for topic 'nope'" in err
    code, _, err = cli(alice, "send", alice.address, "chat", "{oops")
    assert code == 2 and "not valid JSON" in err
    started = time.monotonic()
    code, _, err = cli(alice, "send", "tcp://127.0.0.1:1", "chat", '{"text": "x"}')
    assert code == 1 and "cannot reach tcp://127.0.0.1:1" in err and "fix:" in err
    assert time.monotonic() - started < 15
    assert "Traceback" not in err


async def test_order_errors_and_backpressure_across_processes(
    alice: RunningNode, client: Node
) -> None:
    peer = await client.connect(alice.address)
    for i in range(500):
        await client.send(peer, "record", i)
    with pytest.raises(RemoteError, match="boom on purpose"):
        await client.request(peer, "boom", 1)
    in_flight = 0
    body = "x" * 4096
    for i in range(300):
        await client.send(peer, "slow", [i, body])
        if i % 20 == 0:  # how far ahead of the handler the sender got
            handled = await client.request(peer, "count", None) - 500
            in_flight = max(in_flight, i + 1 - handled)
    await wait_until_handled(client, peer, 800)
    records = (await client.request(peer, "records", None))["records"][client.peer_id]
    assert records[:500] == list(range(500))
    assert [r[0] for r in records[500:]] == list(range(300))
    assert in_flight < 200, f"the sender was not slowed: {in_flight} in flight"


async def wait_until_handled(client: Node, peer: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if await client.request(peer, "count", None) >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} messages were not handled within 20s")


async def test_every_bad_input_closes_only_its_connection(
    alice: RunningNode, client: Node
) -> None:
    peer = await client.connect(alice.address)
    for case, (_, _, reason) in CASES.items():
        await send_bad_input(alice.address, case, max_frame_size=16 * 1024 * 1024)
        assert await client.request(peer, "echo", case) == case
        await wait_until(lambda reason=reason: reason in alice.stderr, 5,  # type: ignore[misc]
                         f"alice logs {reason!r}")
    reader, writer = await raw_tcp(alice.address, handshake=False)
    said = await closed_by_node(reader, timeout=15)
    assert b"handshake did not finish within 5s" in said
    writer.close()
    assert await client.request(peer, "echo", "still here") == "still here"


def test_a_port_in_use_is_a_clear_error_and_sigterm_stops_cleanly(
    project: ProjectMaker,
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    first = RunningNode(project("first", BASIC, listen=[address]))
    try:
        second = project("second", BASIC, listen=[address])
        done = run_cli("run", cwd=second, timeout=30)
        assert done.returncode == 2, done.stderr
        assert f"cannot listen on {address}: address already in use" in done.stderr
        assert "fix:" in done.stderr and "Traceback" not in done.stderr
        # The same project twice: the control socket says so first.
        done = run_cli("run", cwd=first.root, timeout=30)
        assert done.returncode == 2 and "already running" in done.stderr
    finally:
        assert first.stop(signal.SIGTERM) == 0
    assert "stopping: draining mailboxes" in first.stderr
    assert not (first.root / ".p2phost" / "control.sock").exists()


def test_a_deep_project_still_answers_on_a_short_control_socket(
    tmp_path: Path, official_wheels: dict[str, Path],
) -> None:
    # .p2phost/control.sock under this directory is longer than a Unix socket address.
    deep = tmp_path.joinpath(*["a-deep-directory-name"] * 6) / "alice"
    root = write_project(deep, BASIC, name="alice",
                         wheels=[official_wheels[p] for p in BASIC])
    socket_path = Project(root).control_socket
    assert len(str(root / ".p2phost" / "control.sock")) > 108
    assert socket_path.parent == runtime_dir() and len(str(socket_path)) < 100
    node = RunningNode(root)
    try:
        peers = run_cli("peers", cwd=root, timeout=30)
        assert peers.returncode == 0, peers.stderr
        assert node.peer_id in peers.stdout
        assert runtime_dir().stat().st_mode & 0o777 == 0o700
    finally:
        assert node.stop(signal.SIGTERM) == 0
    assert not socket_path.exists()


def test_publish_reaches_every_subscribed_process(project: ProjectMaker) -> None:
    nodes = [RunningNode(project(f"sub{i}", ["tcp-transport", "json-codec", "recorder"]))
             for i in range(3)]
    subscribers = list(nodes)
    try:
        publisher = RunningNode(project(
            "publisher", [*BASIC, "recorder", "static-discovery"],
            config={"static-discovery": {"peers": [s.address for s in subscribers]}}))
        nodes.append(publisher)
        wait_for_peers(publisher, 3)
        code, out, err = cli(publisher, "send", publisher.address, "publish",
                             '{"topic": "record", "body": "news"}', "--request")
        assert (code, out.strip()) == (0, "3"), err
        for sub in subscribers:
            code, out, _ = cli(sub, "send", sub.address, "records", "null", "--request")
            assert json.loads(out)["records"] == {publisher.peer_id: ["news"]}
    finally:
        for node in nodes:
            node.stop()


def peers_of(node: RunningNode) -> list[str]:
    code, out, err = cli(node, "peers", "--json")
    assert code == 0, err
    return [p["peer_id"] for p in json.loads(out)["peers"]]


def wait_for_peers(node: RunningNode, count: int, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = peers_of(node)
        if len(found) == count:
            return found
        time.sleep(0.2)
    pytest.fail(f"{node.root.name} did not reach {count} peers: {node.stderr}")


def test_a_killed_node_is_redialled_when_it_restarts(project: ProjectMaker) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    bob_root = project("bob", BASIC, listen=[address])
    bob = RunningNode(bob_root)
    carol = RunningNode(project("carol", [*BASIC, "static-discovery"],
                                config={"static-discovery": {"peers": [address]}}))
    try:
        assert wait_for_peers(carol, 1) == [bob.peer_id]
        assert bob.stop(signal.SIGKILL) == -signal.SIGKILL
        assert wait_for_peers(carol, 0) == []
        bob = RunningNode(bob_root)  # same project: same identity, same port, stale socket
        assert wait_for_peers(carol, 1) == [bob.peer_id]
        assert "reconnected to " + address in carol.stderr
        code, out, _ = cli(carol, "ping", address, "--count", "1")
        assert code == 0, out
    finally:
        bob.stop()
        carol.stop()
