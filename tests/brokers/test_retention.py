"""Retention edges on the durable media: what expires while a node is killed, a queue
declared before its node first ran, MQTT's age and byte limits (docs/transports.md,
"Retention").

Senders are separate OS processes; receivers are ``p2phost run``.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.brokers.conftest import MEDIA, NodeMaker, ProjectMaker
from tests.brokers.test_offline import inbox_stats, send, store_many


@pytest.mark.services
def test_jetstream_counts_records_handed_to_a_killed_node_that_then_expired(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["nats-jetstream"]
    over.require()
    # Each note takes 1.5 s to handle: the node holds all five when it is killed.
    bob = make_node("bob", over, transport={"max-age": 4.0}, ledger={"delay": 1.5})
    assert bob.process.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    assert store_many(alice, bob.address, 5, ["note"]) == "5"
    bob.restart(signal.SIGTERM)
    assert len(bob.ledger.wait(None, 1, 30)) >= 1, bob.process.stderr
    bob.process.stop(signal.SIGKILL)  # four delivered to it, not finished
    handled = len(bob.ledger.notes())
    assert handled < 5
    deadline = time.monotonic() + 20
    while inbox_stats(bob.root)["expired"] < 5 - handled and time.monotonic() < deadline:
        time.sleep(0.3)
    # Handled and killed before its ack: that one is not finished either, and counts.
    assert 5 - handled <= inbox_stats(bob.root)["expired"] <= 5 - handled + 1
    assert inbox_stats(bob.root)["records"] == 0
