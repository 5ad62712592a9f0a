"""Durable media: a receiver killed with SIGKILL mid-stream loses nothing and handles
nothing twice once it restarts.

Bob's handler is slow, so when he is killed most of alice's notes wait in his inbox on
the medium, some were taken but not yet handled, and some were handled but not yet
acknowledged there. His next run resumes alice's connection: he handles each note
exactly once, in order (but for the one repeat docs/transports.md allows: the note whose
handler finished in the microseconds before its journal line when the kill came), and
alice's node never notices more than a pause.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.brokers.conftest import (
    DURABLE,
    MEDIA,
    NodeMaker,
    bursting,
    without_the_repeat_at_the_kill,
)

NOTES = 200


@pytest.mark.services
@pytest.mark.parametrize("medium", DURABLE)
def test_a_killed_receiver_loses_nothing_and_repeats_nothing(
    medium: str, make_node: NodeMaker
) -> None:
    over = MEDIA[medium]
    over.require()
    bob = make_node("bob", over, ledger={"delay": 0.005})
    alice = make_node("alice", over, connect=[bob.address])
    alice.wait_connected([bob.peer_id])

    with bursting(alice, bob, NOTES) as burst:
        handled = bob.ledger.wait(alice.peer_id, NOTES // 4, 20)
        assert len(handled) < NOTES, "bob handled everything before he could be killed"
        bob.restart(signal.SIGKILL)  # the same project: the same peer id and inbox

        got = bob.ledger.wait_after_kill(alice.peer_id, NOTES, 40)
        out, err = burst.communicate(timeout=60)
    assert burst.returncode == 0 and json.loads(out) == NOTES, err
    assert got == [{"n": n} for n in range(NOTES)], (
        f"{len(handled)} handled before the kill; then {len(got)} in all; "
        f"repeated: {sorted(n['n'] for n in got if got.count(n) > 1)[:10]}; missing: "
        f"{sorted(set(range(NOTES)) - {n['n'] for n in got})[:10]}\n{bob.process.stderr}")
    ids = without_the_repeat_at_the_kill([note["id"] for note in bob.ledger.notes()])
    assert len(ids) == len(set(ids)), "a message reached the handler twice"
    assert "resuming the connection from" in bob.process.stderr
