"""Retention edges on the durable media: what expires while a node is killed, a queue
declared before its node first ran, MQTT's age and byte limits (docs/transports.md,
"Retention").

Senders are separate OS processes; receivers are ``p2phost run``.
"""

from __future__ import annotations

import itertools
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.brokers.conftest import MEDIA, NodeMaker, ProjectMaker
from tests.brokers.test_offline import (
    SENDER,
    inbox_stats,
    send,
    set_config,
    stopped_with_sender,
    store_many,
)
from tests.conftest import run_cli


@pytest.mark.services
def test_jetstream_counts_records_handed_to_a_killed_node_that_then_expired(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["nats-jetstream"]
    over.require()
    # Bob runs when the five are stored, so he is handed them at once. (Stored while he
    # was away, they would wait for his start, which a loaded host stretches past
    # max-age: expired unread, never handed to him.) He finishes the first and holds
    # the other four unfinished: killed holding them is a state, not a race.
    bob = make_node("bob", over, transport={"max-age": 6.0}, ledger={"hold-after": 1})
    alice = make_project("alice", over)
    assert store_many(alice, bob.address, 5, ["note"]) == "5"
    assert len(bob.ledger.wait(None, 1, 30)) >= 1, bob.process.stderr
    bob.process.stop(signal.SIGKILL)  # four delivered to it, not finished
    assert len(bob.ledger.notes()) == 1
    deadline = time.monotonic() + 30
    stats = inbox_stats(bob.root)
    while (stats["expired"] < 4 or stats["records"]) and time.monotonic() < deadline:
        time.sleep(0.3)
        stats = inbox_stats(bob.root)
    # Handled and killed before its ack: that one is not finished either, and counts.
    expired = stats["expired"]
    assert expired in (4, 5) and stats["records"] == 0, stats
    # What an operator purges is not counted as expired. Without max-age from here on,
    # so that the two cannot expire before the purge on a loaded host; the start that
    # lifts it takes the count over, and the total stays.
    set_config(bob.root, over.plugin, "max-age", 0.0)
    bob.restart(signal.SIGTERM)
    assert bob.process.stop(signal.SIGTERM) == 0
    assert store_many(alice, bob.address, 2, ["note"]) == "2"
    done = run_cli("inbox", "purge", "--yes", cwd=bob.root)
    assert done.returncode == 0 and "purged 2 records" in done.stdout, done.stderr
    stats = inbox_stats(bob.root)
    assert stats["expired"] == expired and stats["records"] == 0, stats


@pytest.mark.services
def test_an_amqp_queue_a_sender_declared_before_the_first_run_gets_the_nodes_limits(
        make_project: ProjectMaker) -> None:
    from tests.brokers.conftest import Ledger, Node
    from tests.runtime.processes import RunningNode

    over = MEDIA["amqp"]
    over.require()
    bob = make_project("bob", over, transport={"max-messages": 5}, ledger={"delay": 0.3})
    bob_id = run_cli("id", cwd=bob).stdout.strip()
    alice = make_project("alice", over)
    address = f"{over.url}#{bob_id}"
    # Declared by the first send, without limits: 12 fit.
    assert store_many(alice, address, 12, ["note"]) == "12"
    node = Node(bob, RunningNode(bob), Ledger(bob / "ledger.jsonl"))
    node.runs.append(node.process)
    try:
        # Its first start moves them aside and declares the queue with its limits.
        node.process.stop(signal.SIGTERM)
        # (RabbitMQ counts only ready records against x-max-length: a running node
        # holds up to its prefetch more.)
        assert store_many(alice, address, 5, ["note"]) == "5"
        code, out = send(alice, address, "note", {"n": 5})
        assert code != 0 and "is full (" in out and "nothing was stored" in out, out
        node.restart(signal.SIGTERM)
        got = node.ledger.wait(None, 17, 60)
        ids = {n["id"]: n["body"]["n"] for n in node.ledger.notes()}  # first of each
        assert len(got) >= 17 and list(ids.values()) == [*range(12), *range(5)], (ids,
            node.process.stderr[-3000:])
    finally:
        for run in node.runs:
            run.stop()


@pytest.mark.services
def test_mqtt_max_bytes_refuses_a_send_that_would_pass_it(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    bob, alice = stopped_with_sender(make_node, make_project, "mqtt",
                                     transport={"max-bytes": 3000})
    assert store_many(alice, bob.address, 4, ["note"]) == "4"
    stats = inbox_stats(bob.root)
    assert stats["records"] == 4 and 4 * 300 < stats["bytes"] <= 3000, stats
    sent, out = 4, ""
    while sent < 12:
        code, out = send(alice, bob.address, "note", {"n": sent})
        if code != 0:
            break
        sent += 1
    assert sent < 12 and "is full (max-bytes = 3000 bytes" in out, out
    assert "nothing was stored" in out and "(stored for" not in out, out
    assert inbox_stats(bob.root)["bytes"] <= 3000
    bob.restart(signal.SIGTERM)
    got = bob.ledger.wait(None, sent, 30)
    assert [n["n"] for n in got] == list(range(sent)), bob.process.stderr
    deadline = time.monotonic() + 30
    while inbox_stats(bob.root)["records"] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert inbox_stats(bob.root)["records"] == 0 and inbox_stats(bob.root)["bytes"] == 0


@pytest.mark.services
def test_mqtt_max_age_expires_letters_and_counts_them_killed_node_included(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    # Buckets of 1 s: a letter counts as expired 2 to 4 s after it was stored.
    bob, alice = stopped_with_sender(make_node, make_project, "mqtt",
                                     transport={"max-age": 2.0}, ledger={"delay": 2.5})
    assert store_many(alice, bob.address, 5, ["note"]) == "5"
    deadline = time.monotonic() + 15
    while inbox_stats(bob.root)["expired"] < 5 and time.monotonic() < deadline:
        time.sleep(0.3)
    stats = inbox_stats(bob.root)
    # Dropped by the broker only when the session is read: still in its queue.
    assert stats["expired"] == 5 and stats["records"] == 5, stats
    bob.restart(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while inbox_stats(bob.root)["records"] and time.monotonic() < deadline:
        time.sleep(0.3)
    stats = inbox_stats(bob.root)
    assert stats["records"] == 0 and stats["expired"] == 5, stats
    assert bob.ledger.notes() == []

    # Handed to the node, which is killed before it finishes them: they expire too. The
    # node is killed once the three are stored and it handled the first, without waiting
    # for the sender to exit: a sender slow to close (a loaded machine) would otherwise
    # leave the node time to handle them all.
    sender = subprocess.Popen([sys.executable, str(SENDER), bob.address, "3", "note"],
                              cwd=alice, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert sender.stdout is not None
        assert select.select([sender.stdout], [], [], 60)[0], "the sender stored nothing"
        stored = sender.stdout.readline()  # printed once the last is stored
        stored_at = time.monotonic()
        assert len(bob.ledger.wait(None, 1, 20)) >= 1, bob.process.stderr
        # Started again once the broker has dropped what the killed node held (max-age
        # 2 s, which the broker counts in whole seconds): a node back sooner is handed
        # them again, as it should be, and handles them.
        bob.restart(signal.SIGKILL, pause=max(0.0, stored_at + 3.5 - time.monotonic()))
        _, errors = sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert stored.strip() == "3" and sender.returncode == 0, errors
    notes = bob.ledger.notes()
    handled = len(notes)
    assert handled < 3, notes  # at least one was in the node's hands when it was killed
    # One peer's notes are handled one at a time, in order (each handler takes 2.5 s).
    assert [n["body"]["n"] for n in notes] == list(range(handled))
    assert all(a["ended"] <= b["started"] for a, b in itertools.pairwise(notes)), notes
    deadline = time.monotonic() + 15
    while inbox_stats(bob.root)["expired"] < 8 - handled and time.monotonic() < deadline:
        time.sleep(0.3)
    # Handled and killed before its ack: not finished either, and counted.
    assert 8 - handled <= inbox_stats(bob.root)["expired"] <= 9 - handled
    time.sleep(3)
    assert len(bob.ledger.notes()) == handled  # the broker delivered none again


@pytest.mark.services
def test_mqtt_senders_storing_at_once_pass_the_limit_by_one_letter_each_at_most(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    import subprocess
    import sys
    from pathlib import Path

    over = MEDIA["mqtt"]
    over.require()
    bob = make_node("bob", over, transport={"max-messages": 30})
    assert bob.process.stop(signal.SIGTERM) == 0
    script = Path(__file__).resolve().parent / "fill_sender.py"
    senders = [make_project(f"sender{k}", over) for k in range(3)]
    running = [subprocess.Popen([sys.executable, str(script), bob.address, str(k)], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for k, root in enumerate(senders)]
    outputs = [p.communicate(timeout=120) for p in running]
    assert all(p.returncode == 0 for p in running), outputs
    stored = sum(int(out.strip()) for out, _ in outputs)
    # No compare-and-set on MQTT: each *other* sender may have one letter in flight
    # when a sender takes the last place (docs/transports.md, "Limits of the counting").
    assert 30 <= stored <= 30 + 2, outputs
    bob.restart(signal.SIGTERM)
    got = bob.ledger.wait(None, stored, 30)
    assert len(got) == stored, bob.process.stderr  # nothing the broker dropped
    for k in range(3):
        mine = [n["n"] for n in got if n["tag"] == str(k)]
        assert mine == sorted(mine)
