"""Peers that are not running: messages stored in their durable inbox, handled when they
run (docs/transports.md, "Peers that are not running").

Every sender here is a separate OS process (`p2phost send`, or a script that exits as soon
as the medium has its messages); every receiver is `p2phost run`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers.conftest import DURABLE, MEDIA, NodeMaker, ProjectMaker
from tests.conftest import run_cli

SENDER = Path(__file__).resolve().parent / "offline_sender.py"


def send(root: Path, address: str, topic: str, body: object, *extra: str,
         timeout: float = 60) -> tuple[int, str]:
    """``p2phost send`` from the project at ``root``: (exit code, stderr + stdout)."""
    done = run_cli("send", address, topic, json.dumps(body), *extra, cwd=root, timeout=timeout)
    return done.returncode, done.stderr + done.stdout


def store_many(root: Path, address: str, count: int, topics: list[str]) -> str:
    """The sender script, in its own process: ``count`` notes on each topic, then exit."""
    done = subprocess.run([sys.executable, str(SENDER), address, str(count), *topics],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.services
def test_chat_sent_to_a_stopped_redis_node_arrives_after_it_restarts(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["redis"]
    over.require()
    bob = make_node("bob", over)
    address = bob.address
    assert bob.process.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    for n in range(20):
        code, out = send(alice, address, "note", {"text": f"offline-{n}"})
        assert code == 0, out
        assert f"(stored for {bob.peer_id} on redis://127.0.0.1:6379/0)" in out, out
    bob.restart(signal.SIGTERM)
    got = bob.ledger.wait(None, 20, 30)
    assert got == [{"text": f"offline-{n}"} for n in range(20)], bob.process.stderr
