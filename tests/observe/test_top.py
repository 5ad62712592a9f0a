"""``p2phost top`` on a busy ``p2phost run`` process: ``--once --json`` rates match the
measured send rate, and the live view draws its tables in a terminal (tmux)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from p2phost._runtime import Node
from tests.cli.test_json import check
from tests.conftest import run_cli
from tests.runtime.conftest import build_node
from tests.runtime.processes import RunningNode

RATE = 120.0  # messages per second the load sends


@pytest.fixture
def node(make_project: Callable[..., Path]) -> Iterator[RunningNode]:
    root = make_project(["tcp-transport", "json-codec", "echo"], name="busy")
    running = RunningNode(root)
    yield running
    running.stop()


@pytest.fixture
async def sender(node: RunningNode) -> AsyncIterator[tuple[Node, str]]:
    client = build_node("tcp", listen=[])
    await client.start()
    peer = await client.connect(node.address)
    yield client, peer
    await client.close()


async def paced(client: Node, peer: str, until: asyncio.Event) -> float:
    """Send ``echo`` messages at RATE per second until ``until`` is set; the rate achieved."""
    start = time.monotonic()
    sent = 0
    while not until.is_set() and (elapsed := time.monotonic() - start) < 60:
        due = int(elapsed * RATE) + 1
        while sent < due:
            await client.send(peer, "echo", sent)
            sent += 1
        await asyncio.sleep(1 / RATE)
    return sent / (time.monotonic() - start)


async def test_top_once_json_rates_match_the_send_rate(
        node: RunningNode, sender: tuple[Node, str]) -> None:
    client, peer = sender
    # Steady load from before top starts until after it ends, over a window of 3 s: a
    # busy machine that delays the node's reads by tens of milliseconds moves it ~1 %.
    stop = asyncio.Event()
    load = asyncio.create_task(paced(client, peer, stop))
    await asyncio.sleep(0.8)
    done = await asyncio.to_thread(run_cli, "top", "--once", "--json", "--interval", "3",
                                   cwd=node.root, timeout=60)
    stop.set()
    measured = await load
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    check("p2phost top --once --json", shown)
    topic = next(t for t in shown["topics"] if t["topic"] == "echo")
    assert abs(topic["in_per_s"] - measured) <= 0.2 * measured, (topic, measured)
    assert abs(topic["handled_per_s"] - measured) <= 0.2 * measured, (topic, measured)
    (row,) = [p for p in shown["peers"] if p["peer_id"] == client.peer_id]
    assert row["transport"] == "tcp"
    assert abs(row["in_per_s"] - measured) <= 0.2 * measured, (row, measured)


def test_top_draws_its_tables_in_a_terminal(node: RunningNode) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing (scripts/ensure-tools.sh installs it)")
        pytest.skip("tmux is not installed (scripts/ensure-tools.sh installs it)")
    session = f"top-{uuid.uuid4().hex[:8]}"
    command = f"cd {node.root} && {sys.executable} -m p2phost top"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                    command], check=True, timeout=10)
    try:
        deadline, screen = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, timeout=10).stdout
            if "topics" in screen and "echo" in screen and "dead letters:" in screen:
                break
            time.sleep(0.2)
        assert "peers" in screen and "in/s" in screen and "echo" in screen, screen
        assert "mailboxes" in screen and "dead letters:" in screen, screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], timeout=10)
