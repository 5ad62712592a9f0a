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
import time
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from tests.brokers.conftest import DURABLE, MEDIA, Ledger, Node, NodeMaker, ProjectMaker
from tests.conftest import run_cli, write_project
from tests.runtime.processes import RunningNode, free_port

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


def stopped_with_sender(make_node: NodeMaker, make_project: ProjectMaker, medium: str,
                        **project: Any) -> tuple[Node, Path]:
    """Bob run once over ``medium`` and stopped cleanly (his inbox stays), and a project
    alice that sends to him: (bob, alice)."""
    over = MEDIA[medium]
    over.require()
    bob = make_node("bob", over, **project)
    assert bob.process.stop(signal.SIGTERM) == 0
    return bob, make_project("alice", over)


@pytest.mark.services
def test_chat_sent_to_a_stopped_redis_node_arrives_after_it_restarts(
        tmp_path: Path, official_wheels: dict[str, Path], make_project: ProjectMaker) -> None:
    over = MEDIA["redis"]
    over.require()
    plugins = ["redis-transport", "json-codec", "chat"]
    bob = write_project(tmp_path / "chatter", plugins, listen=[over.url],
                        wheels=[official_wheels[p] for p in plugins])
    first = RunningNode(bob)
    address, peer_id = first.address, first.peer_id
    assert first.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    for n in range(20):
        code, out = send(alice, address, "chat", {"text": f"offline-{n}"})
        assert code == 0, out
        assert f"(stored for {peer_id} on redis://127.0.0.1:6379/0)" in out, out
    again = RunningNode(bob)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            said = [line.split(": ", 1)[1] for line in again.lines if line.startswith("[chat]")]
            if len(said) >= 20:
                break
            time.sleep(0.1)
        assert said == [f"offline-{n}" for n in range(20)], again.stderr
    finally:
        again.stop()


COUNT = 1000
#: Mosquitto queues at most max_queued_messages (1,000 by default) for an absent session
#: and drops the rest (docs/transports.md): the shared test broker keeps its defaults.
COUNTS = {"mqtt": 450}
MODES = {"note": "at-least-once", "entry": "effectively-once"}


def with_modes(root: Path) -> Path:
    """``[delivery.note]`` at-least-once, ``[delivery.entry]`` effectively-once."""
    manifest = root / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    delivery = tomlkit.table()
    for topic, mode in MODES.items():
        table = tomlkit.table()
        table["mode"] = mode
        delivery[topic] = table
    doc["delivery"] = delivery
    manifest.write_text(tomlkit.dumps(doc))
    return root


def check_once_in_order(node: Node, sender: str, count: int) -> None:
    """Every entry (effectively-once) from ``sender`` handled exactly once, in order, as
    its store says (committed with each outcome, whatever was killed when); every note
    (at-least-once) handled, in order of first handling: a note may come again after a
    kill (handled, not yet committed or journalled), never go missing."""
    entries = [e["body"]["n"] for e in node.ledger.entries() if e["from"] == sender]
    twice = sorted({n for n in entries if entries.count(n) > 1})[:10]
    missing = sorted(set(range(count)) - set(entries))[:10]
    assert entries == list(range(count)), (
        f"entry: {len(entries)} handled; twice: {twice}; missing: {missing}\n"
        f"{node.process.stderr[-3000:]}")
    notes = [n["body"]["n"] for n in node.ledger.notes()
             if n["from"] == sender and n.get("topic") == "note"]
    first = list(dict.fromkeys(notes))
    missing = sorted(set(range(count)) - set(first))[:10]
    assert first == list(range(count)), (
        f"note: {len(first)} handled; missing: {missing}\n{node.process.stderr[-3000:]}")


def wait_handled(node: Node, total: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while len(node.ledger.notes()) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(node.ledger.notes())


def wait_once_in_order(node: Node, sender: str, count: int, *, stall: float = 60,
                       limit: float = 240) -> None:
    """:func:`check_once_in_order`, once the store holds ``count`` entries and every
    note came, or once nothing more was handled for ``stall`` seconds (``limit`` at
    most). The ledger's lines are written as each handler runs; the store has an entry
    only once its outcome is folded into the database (up to a second later, more on a
    loaded host): waiting for lines alone would check the store before it caught up.
    A loaded host handles slowly, not never: the wait follows progress, and a message
    lost (or out of order: a gap the medium never fills) is a stall."""
    start = since = time.monotonic()
    last = -1
    while True:
        entries = len(node.ledger.entries())
        lines = node.ledger.notes()
        notes = {n["body"]["n"] for n in lines if n["topic"] == "note"}
        if entries >= count and len(notes) >= count:
            break
        now = time.monotonic()
        if entries + len(lines) != last:
            last, since = entries + len(lines), now
        elif now - since > stall or now - start > limit:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # anything handled twice would show now
    check_once_in_order(node, sender, count)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.services
@pytest.mark.parametrize("medium", DURABLE)
def test_stored_while_stopped_then_killed_midway_handled_once_in_order(
        medium: str, make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA[medium]
    over.require()
    count = COUNTS.get(medium, COUNT)
    bob = make_node("bob", over, ledger={"delay": 0.002})
    with_modes(bob.root)
    assert bob.process.stop(signal.SIGTERM) == 0  # a clean stop: the inbox stays
    alice = make_project("alice", over)
    assert store_many(alice, bob.address, count, list(MODES)) == str(2 * count)
    alice_id = run_cli("id", cwd=alice).stdout.strip()

    bob.restart(signal.SIGTERM)
    handled = wait_handled(bob, 2 * count // 4, 120)
    assert handled < 2 * count, "bob handled everything before he could be killed"
    bob.restart(signal.SIGKILL)  # killed while handling them
    wait_once_in_order(bob, alice_id, count)


def set_config(root: Path, plugin: str, key: str, value: object) -> None:
    """``[config.PLUGIN] KEY = VALUE`` in the project at ``root``, from the node's next
    run."""
    manifest = root / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    doc["config"][plugin][key] = value  # type: ignore[index]
    manifest.write_text(tomlkit.dumps(doc))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.services
def test_stored_messages_redelivered_while_queued_survive_a_kill(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    """JetStream delivers again every message not acknowledged within its ack wait (5 s):
    a slow handler leaves the letters it has queued (the mailbox holds 1024) past that.
    The node keeps them in progress (copies would be a storm on a busy node); one too
    busy to do so in time gets copies while the first ones wait, and a copy must not
    settle the stored record: a node killed before the first one is handled lost it, and
    later entries were handled after the gap (seen once under load, with a 2 ms
    handler). Either way, nothing is lost or reordered across the kill."""
    over = MEDIA["nats-jetstream"]
    over.require()
    count = 150
    bob = make_node("bob", over, ledger={"delay": 0.05})  # 300 letters: 15 s to handle
    with_modes(bob.root)
    assert bob.process.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    assert store_many(alice, bob.address, count, list(MODES)) == str(2 * count)
    alice_id = run_cli("id", cwd=alice).stdout.strip()

    bob.restart(signal.SIGTERM)
    # 130 handled: 6.5 s at least, past the ack wait, with more than 150 still queued.
    handled = wait_handled(bob, 130, 120)
    assert handled < 2 * count, "bob handled everything before he could be killed"
    set_config(bob.root, "ledger", "delay", 0.0)
    bob.restart(signal.SIGKILL)
    wait_once_in_order(bob, alice_id, count)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.services
@pytest.mark.parametrize("medium", DURABLE)
def test_stored_for_a_node_that_never_ran(medium: str, make_project: ProjectMaker) -> None:
    over = MEDIA[medium]
    over.require()
    count = COUNTS.get(medium, COUNT)
    bob = with_modes(make_project("bob", over))
    bob_id = run_cli("id", cwd=bob).stdout.strip()
    alice = make_project("alice", over)
    address = f"{over.url}#{bob_id}"
    assert store_many(alice, address, count, list(MODES)) == str(2 * count)
    alice_id = run_cli("id", cwd=alice).stdout.strip()
    process = RunningNode(bob)
    try:
        node = Node(bob, process, Ledger(bob / "ledger.jsonl"), runs=[process])
        wait_once_in_order(node, alice_id, count)
    finally:
        process.stop()


def dead_letters(root: Path) -> list[dict[str, object]]:
    done = run_cli("dead", "list", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def trusting(make_node: NodeMaker, over: Any, trust: dict[str, Any]) -> Node:
    """A running node "bob" on ``over`` whose manifest now has ``[trust]`` = ``trust``
    (it applies from its next run)."""
    over.require()
    bob = make_node("bob", over)
    manifest = bob.root / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    doc["trust"] = trust
    manifest.write_text(tomlkit.dumps(doc))
    return bob


@pytest.mark.services
def test_an_allowlisted_node_dead_letters_a_strangers_stored_messages(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["redis"]
    bob = trusting(make_node, over, {"policy": "allowlist", "peers": []})
    bob.restart(signal.SIGTERM)  # now with the allowlist
    stranger = make_project("stranger", over)
    for n in range(3):
        code, out = send(stranger, bob.address, "note", {"n": n})
        assert code == 0 and "(stored for" in out, out
    deadline = time.monotonic() + 30
    while len(dead_letters(bob.root)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    letters = dead_letters(bob.root)
    assert len(letters) == 3, bob.process.stderr
    assert all("refused by the trust policy" in str(x["reason"]) for x in letters), letters
    assert bob.ledger.notes() == [], "the handler ran for a stranger"


@pytest.mark.services
def test_a_tofu_node_records_a_sender_first_seen_through_stored_messages(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["redis"]
    bob = trusting(make_node, over, {"policy": "tofu"})
    assert bob.process.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    alice_id = run_cli("id", cwd=alice).stdout.strip()
    assert send(alice, bob.address, "note", {"n": 0})[0] == 0
    bob.restart(signal.SIGTERM)
    assert bob.ledger.wait(None, 1, 30) == [{"n": 0}], bob.process.stderr
    known = run_cli("trust", "list", cwd=bob.root)
    assert alice_id in known.stdout and "tofu" in known.stdout, known.stdout + known.stderr


@pytest.mark.services
def test_a_record_altered_on_the_medium_is_rejected_and_the_others_handled(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    import redis

    over = MEDIA["redis"]
    over.require()
    bob = make_node("bob", over)
    assert bob.process.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    for n in range(3):
        assert send(alice, bob.address, "note", {"n": n})[0] == 0
    client = redis.Redis.from_url(over.url)
    key = f"p2phost:inbox:{bob.peer_id}"
    entries = client.xrange(key)
    letters = [(i, f[b"r"]) for i, f in entries if f[b"r"][5] == 9]  # type LETTER
    assert len(letters) == 3
    middle_id, middle = letters[1]
    altered = bytearray(middle)
    altered[-20] ^= 0x01  # one bit inside the sealed letter
    client.xdel(key, middle_id)
    client.xadd(key, {b"r": bytes(altered)})
    client.close()
    bob.restart(signal.SIGTERM)
    assert bob.ledger.wait(None, 2, 30) == [{"n": 0}, {"n": 2}], bob.process.stderr
    deadline = time.monotonic() + 10
    while "rejected a stored record" not in bob.process.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "fails authentication" in bob.process.stderr, bob.process.stderr
    assert inbox_stats(bob.root)["rejected"] == 1


@pytest.mark.services
def test_a_request_to_a_stopped_node_fails_clearly_and_a_running_one_answers(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["redis"]
    over.require()
    bob = make_node("bob", over)
    alice = make_project("alice", over)
    code, out = send(alice, bob.address, "echo", {"hi": 1}, "--request")
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == {"hi": 1}, out
    assert bob.process.stop(signal.SIGTERM) == 0
    code, out = send(alice, bob.address, "echo", {"hi": 2}, "--request", "--timeout", "1")
    assert code != 0 and "did not answer in time" in out and "fix:" in out, out


@pytest.mark.services
async def test_a_pure_producer_stores_messages_and_cannot_make_requests(
        make_project: ProjectMaker) -> None:
    from p2phost._project import Project
    from p2phost._runtime.node._assemble import node_for_project
    from p2phost_sdk import PeerUnavailable

    over = MEDIA["redis"]
    over.require()
    bob = make_project("bob", over)
    bob_id = run_cli("id", cwd=bob).stdout.strip()
    sensor = make_project("sensor", over)
    manifest = sensor / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    doc["node"]["listen"] = []  # type: ignore[index]
    manifest.write_text(tomlkit.dumps(doc))
    address = f"{over.url}#{bob_id}"
    node = node_for_project(Project(sensor))
    async with node:
        assert await node.store(address, "note", {"reading": 1}) == over.url
        await node.send(address, "note", {"reading": 2})
        with pytest.raises(PeerUnavailable, match="reads no inbox on redis://"):
            await node.request(address, "echo", {})
    process = RunningNode(bob)
    try:
        ledger = Ledger(bob / "ledger.jsonl")
        assert ledger.wait(None, 2, 30) == [{"reading": 1}, {"reading": 2}], process.stderr
    finally:
        process.stop()


@pytest.mark.services
def test_inbox_commands_show_purge_and_delete_what_waits(
        make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA["redis"]
    bob, alice = stopped_with_sender(make_node, make_project, "redis")
    alice_id = run_cli("id", cwd=alice).stdout.strip()
    for n in range(5):
        assert send(alice, bob.address, "note", {"n": n})[0] == 0

    def cli_json(*args: str) -> object:
        done = run_cli("inbox", *args, "--json", cwd=bob.root)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    listed = cli_json("list")
    assert isinstance(listed, list) and listed[0]["records"] == 5 and listed[0]["exists"]
    stats = cli_json("stats")
    assert isinstance(stats, list)
    assert stats[0]["senders"] == {alice_id: 5} and stats[0]["bytes"] > 0
    assert stats[0]["oldest"] <= time.time()
    assert cli_json("purge", "--yes") == [{"medium": over.url, "purged": 5}]
    assert cli_json("list")[0]["records"] == 0  # type: ignore[index]
    assert cli_json("delete", "--yes") == [{"medium": over.url, "deleted": True}]
    assert cli_json("list")[0]["exists"] is False  # type: ignore[index]
    done = run_cli("inbox", "stats", "nats://127.0.0.1:4222", cwd=bob.root)
    assert done.returncode != 0 and "has no inbox on" in done.stderr and "fix:" in done.stderr


@pytest.mark.services
def test_bad_input_to_a_stored_send_is_one_clear_error(make_project: ProjectMaker) -> None:
    from p2phost_sdk import peer_id_from_public_key

    MEDIA["redis"].require()
    MEDIA["nats"].require()
    root = make_project("alice", MEDIA["redis"], transport={"connect-timeout": 1.0,
                                                             "send-timeout": 1.0})
    manifest = root / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    doc["node"]["max-frame-size"] = 2048  # type: ignore[index]
    manifest.write_text(tomlkit.dumps(doc))
    someone = run_cli("id", cwd=make_project("someone", MEDIA["redis"])).stdout.strip()
    url = MEDIA["redis"].url

    code, out = send(root, f"{url}#{someone[:-1]}", "note", {})
    assert code != 0 and "is not a peer id" in out, out
    not_a_key = peer_id_from_public_key(b"\xff" * 32)
    code, out = send(root, f"{url}#{not_a_key}", "note", {})
    assert code != 0 and "not a usable public key" in out and "(stored for" not in out, out
    code, out = send(root, f"{url}#{someone}", "note", {"pad": "x" * 4096})
    assert code != 0 and "over the maximum frame size" in out and "(stored for" not in out, out
    down = f"redis://127.0.0.1:{free_port()}/0#{someone}"
    code, out = send(root, down, "note", {})
    assert code != 0 and "cannot reach" in out and "(stored for" not in out, out
    assert "retried for 1s" in out, out  # send-timeout, then a clear failure

    nats = make_project("natty", MEDIA["nats"])
    code, out = send(nats, f"{MEDIA['nats'].url}#{someone}", "note", {})
    assert code != 0 and "durable = true" in out and "(stored for" not in out, out


def inbox_stats(root: Path) -> dict[str, Any]:
    done = run_cli("inbox", "stats", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout)[0])


@pytest.mark.services
@pytest.mark.parametrize("medium", [
    "redis", "postgresql", "nats-jetstream",
    pytest.param("amqp", marks=pytest.mark.slow), pytest.param("mqtt", marks=pytest.mark.slow)])
def test_retention_refuses_a_full_inbox_and_counts_what_expired(
        medium: str, make_node: NodeMaker, make_project: ProjectMaker) -> None:
    over = MEDIA[medium]
    over.require()
    bob = make_node("bob", over, transport={"max-messages": 100})
    assert bob.process.stop(signal.SIGTERM) == 0
    alice = make_project("alice", over)
    assert store_many(alice, bob.address, 100, ["note"]) == "100"
    code, out = send(alice, bob.address, "note", {"n": 100})
    assert code != 0 and "is full (" in out and "nothing was stored" in out, out
    assert "fix: wait until that node has run" in out, out
    if medium in ("redis", "postgresql", "mqtt"):
        assert "(max-messages = 100 waiting records" in out, out
    assert "(stored for" not in out
    if medium == "mqtt":
        # No max-age there (the broker would drop expired records uncounted), and no
        # limit above what the broker queues per absent session (it drops the rest).
        wide = make_project("wide", over, transport={"max-messages": 5000})
        done = run_cli("run", cwd=wide, timeout=60)
        assert done.returncode != 0, done.stdout
        assert "max-messages = 5000" in done.stderr and "broker-queue-limit" in done.stderr
        return

    carol = make_node("carol", over, transport={"max-age": 1.0})
    assert carol.process.stop(signal.SIGTERM) == 0
    assert store_many(alice, carol.address, 5, ["note"]) == "5"
    if medium in ("nats-jetstream", "amqp"):
        # The broker removes them on its own clock; stats count them while carol is
        # away, and her next start takes the count over.
        deadline = time.monotonic() + 15
        while inbox_stats(carol.root)["expired"] < 5 and time.monotonic() < deadline:
            time.sleep(0.3)
    else:
        time.sleep(1.5)
    carol.restart(signal.SIGTERM)  # its first read expires them
    assert inbox_stats(carol.root)["expired"] == 5
    assert carol.ledger.notes() == []


@pytest.mark.services
async def test_letters_stored_concurrently_arrive_out_of_order_and_all_are_handled(
        make_project: ProjectMaker) -> None:
    import asyncio

    from p2phost._project import Project
    from p2phost._runtime.node._assemble import node_for_project

    over = MEDIA["redis"]
    over.require()
    bob = make_project("bob", over)
    bob_id = run_cli("id", cwd=bob).stdout.strip()
    alice = node_for_project(Project(make_project("alice", over)), client=True)
    async with alice:
        await asyncio.gather(*(alice.store(f"{over.url}#{bob_id}", "note", {"n": n})
                               for n in range(50)))
    process = RunningNode(bob)
    try:
        got = Ledger(bob / "ledger.jsonl").wait(None, 50, 30)
        assert sorted(n["n"] for n in got) == list(range(50)), process.stderr
    finally:
        process.stop()
