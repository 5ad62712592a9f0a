"""The outbox journal: a send that returned survives SIGKILL at any instant, a record
torn by a kill is dropped, and a journal damaged otherwise stops the node with a fix.

The kill test runs a sender in its own process, sending without pause to a peer that
is not running, and SIGKILLs it at a random moment (mid-append, mid-fold, between
sends): the next start must hold every message whose ``send()`` returned, and the
receiver, once it runs, must handle each exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from p2phost._runtime.delivery._appstate import AppState
from p2phost._runtime.delivery._committer import Committer
from p2phost._runtime.delivery._dedupe import Dedupe
from p2phost._runtime.delivery._injournal import INBOX_JOURNAL, OutcomeJournal
from p2phost._runtime.delivery._journal import JOURNAL_NAME, Journal, JournalCorrupt
from p2phost._runtime.delivery._store import open_connections, open_database
from p2phost_sdk import Identity
from tests.delivery.conftest import DELIVERY_MEDIA, ProjectMaker
from tests.delivery.test_node import Keeper, Make, Sender, kind, make, until
from tests.runtime.processes import free_port

__all__ = ["kind", "make"]  # the fixtures, shared with test_node
REPO = Path(__file__).resolve().parents[2]

# The sender process: sends "kept" messages 0, 1, 2, ... to a peer that is not
# running, printing each number once its send() returned, until it is killed.
CHILD = """
import asyncio, sys
from pathlib import Path
from p2phost._delivery_settings import DeliverySettings
from tests.delivery.test_node import Sender
from tests.runtime.conftest import build_node

async def main() -> None:
    node = build_node("tcp", [Sender()], listen=[], state_dir=Path(sys.argv[1]),
                      delivery=DeliverySettings())
    await node.start()
    print("started", flush=True)
    n = 0
    while True:
        await node.send(sys.argv[2], "kept", n)
        print(n, flush=True)
        n += 1

asyncio.run(main())
"""


def kill_a_sender(state: Path, peer: str, after: float) -> list[int]:
    """Run the sender process for ``after`` seconds of sending, SIGKILL it; the
    numbers whose send() returned."""
    errors = (state.parent / "sender.err").open("w+")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(state), peer], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=errors, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != "started\n":
        child.kill()
        errors.seek(0)
        pytest.fail(f"the sender did not start: {line}{errors.read()}")
    lines: list[str] = []
    # Read as it goes, so the sender never waits for the pipe: it is killed sending.
    reader = threading.Thread(target=lambda: lines.extend(child.stdout or ()))
    reader.start()
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    reader.join(30)
    assert child.wait(30) == -signal.SIGKILL
    errors.close()
    return [int(n) for n in lines]


@pytest.mark.timeout(180)
async def test_every_returned_send_survives_sigkill_and_is_handled_once(
        make: Make, tmp_path: Path) -> None:
    receiver_id = Identity.generate()
    state = tmp_path / "sender"
    sent: list[int] = []
    for round_ in range(3):  # each kill lands on what the last start replayed, too
        moment = random.uniform(0.1, 0.6)
        returned = kill_a_sender(state, receiver_id.peer_id, moment)
        print(f"round {round_}: killed after {moment:.2f}s, {len(returned)} sends returned")
        sent.extend(returned)
    # Every round numbered from 0 again: the same bodies, different messages.
    expected = sorted(sent)

    sender = await make([Sender()], state=state, listen=[])
    waiting = sender.delivery.snapshot()["outbox"].get("kept", 0)
    # At most one more per kill: a send whose record was whole but had not returned.
    assert len(expected) <= waiting <= len(expected) + 3
    await sender.close()

    address = f"tcp://127.0.0.1:{free_port()}"
    keeper = Keeper()
    await make([keeper], listen=[address], identity=receiver_id)
    sender = await make([Sender()], state=state, listen=[])
    await sender.connect(address)
    await until(lambda: len(keeper.bodies) >= waiting, timeout=120)
    assert len(keeper.bodies) == waiting
    missing = Counter(expected) - Counter(keeper.bodies)
    assert not missing, f"sends that returned but never arrived: {list(missing)[:10]}"
    await until(lambda: sender.delivery.snapshot()["outbox"] == {})


def journal_with(path: Path, payloads: list[bytes]) -> Journal:
    journal = Journal(path, segment=64 * 1024)
    journal.restart()
    for payload in payloads:
        assert journal.append(payload) is not None
    return journal


def test_a_record_torn_by_a_kill_ends_the_replay_quietly(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal_with(path, [b"first", b"second", b"third" * 20]).close()
    data = bytearray(path.read_bytes())
    tail = data.rfind(b"third")
    data[tail - 10:tail + 5] = b"\0" * 15  # the last record half written
    path.write_bytes(bytes(data))
    reopened = Journal(path, segment=64 * 1024)
    assert list(reopened.replay()) == [b"first", b"second"]
    reopened.close()


def test_a_record_damaged_in_the_middle_stops_the_start_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal_with(path, [b"first", b"second", b"third"]).close()
    data = bytearray(path.read_bytes())
    at = data.find(b"second")
    data[at:at + 6] = b"SECOND"  # valid records follow: no kill did that
    path.write_bytes(bytes(data))
    reopened = Journal(path, segment=64 * 1024)
    with pytest.raises(JournalCorrupt) as caught:
        list(reopened.replay())
    reopened.close()
    assert "damaged" in str(caught.value) and "\nfix: stop the node and move" in str(caught.value)


@pytest.mark.parametrize("damage", ["truncated", "header"])
async def test_a_damaged_journal_file_stops_the_node_with_a_fix(
        make: Make, tmp_path: Path, damage: str) -> None:
    state = tmp_path / "sender"
    node = await make([Sender()], state=state, listen=[])
    await node.send(Identity.generate().peer_id, "kept", 1)
    await node.close()
    path = state / JOURNAL_NAME
    data = path.read_bytes()
    path.write_bytes(data[:1000] if damage == "truncated" else b"garbage!" + data[8:])
    with pytest.raises(JournalCorrupt) as caught:
        await make([Sender()], state=state, listen=[])
    assert str(path) in str(caught.value) and "\nfix: stop the node and move" in str(caught.value)


async def test_sends_are_durable_before_any_commit(make: Make, tmp_path: Path) -> None:
    """A send returns with nothing committed for it: the journal alone holds it."""
    state = tmp_path / "sender"
    node = await make([Sender()], state=state, listen=[])
    committer = node.delivery._committer
    assert committer is not None
    before = committer.commits
    for n in range(10):
        await node.send(Identity.generate().peer_id, "kept", n)
    assert committer.commits == before
    await asyncio.sleep(0)


async def test_outcomes_in_the_inbox_journal_are_replayed_once(tmp_path: Path) -> None:
    """A handler's store writes and dedupe mark, journalled and acknowledged but not yet
    folded when the receiver dies, are in the database after the next start; those
    already folded are not applied again (a later write to the same key wins)."""
    path = tmp_path / "delivery.db"
    db, writer, quick = open_connections(path)
    committer = Committer(db, writer, quick)
    dedupe = Dedupe(db, window=3600)
    state = AppState(db)
    outcomes = OutcomeJournal(Journal(tmp_path / INBOX_JOURNAL), committer, dedupe)
    outcomes.journal.restart()

    def handled(message_id: int, total: int) -> None:
        session = state.session("app")
        session.put("total", total)
        _, settle = state.commit(session)
        assert outcomes.append(("alice", message_id), True, "app", session.writes, settle)

    handled(1, 10)
    await committer.write(lambda db: None)  # folds the first outcome
    handled(2, 20)  # then the process dies: only the journal has this one
    assert dedupe.seen(("alice", 2), durable=True) == "done"
    assert db.execute("SELECT COUNT(*) FROM dedupe").fetchone()[0] == 1
    outcomes.close()
    for connection in (db, writer, quick):
        connection.close()

    fresh = open_database(path)
    journal = Journal(tmp_path / INBOX_JOURNAL)
    assert OutcomeJournal.replay(journal, fresh) == 1
    assert fresh.execute("SELECT value FROM app_state").fetchall() == [("20",)]
    assert sorted(fresh.execute("SELECT id FROM dedupe").fetchall()) == [(1,), (2,)]
    journal.close()
    fresh.close()


@pytest.mark.timeout(180)
def test_p2phost_run_with_a_damaged_journal_says_how_to_go_on(
        delivery_project: ProjectMaker) -> None:
    """The user's view: `p2phost run` stops with the error and its fix, no traceback."""
    receiver = delivery_project("receiver", DELIVERY_MEDIA["tcp"])
    receiver.start()
    assert receiver.node.stop() == 0
    journal = receiver.root / ".p2phost" / JOURNAL_NAME
    journal.write_bytes(journal.read_bytes()[:4096])
    done = subprocess.run([sys.executable, "-m", "p2phost", "run"], cwd=receiver.root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{journal} is 4096 bytes" in done.stderr, done.stderr
    assert "fix: stop the node and move" in done.stderr
    assert "Traceback" not in done.stderr
