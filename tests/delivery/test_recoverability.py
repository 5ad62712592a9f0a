"""Recoverability on every medium, with separate ``p2phost run`` processes.

Per medium: a producer sends tally messages (effectively-once, with idempotency keys)
to a receiver while the receiver is killed with SIGKILL twice and the sender once, at
random moments; the restarted producer sends every message again. Every message reaches
the handler (as committed in the receiver's store), none twice, and the sender's outbox
empties. Then a handler that fails twice succeeds on its third attempt,
a handler that always fails ends in the dead-letter store after its attempts and
``p2phost dead retry`` delivers it after the fix, and a body the codec cannot decode
goes straight to the dead-letter store.

10,000 messages on every medium; the kill moments are printed with their random seed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import Codec, Identity, PluginContext, PluginMetadata
from tests.brokers.conftest import Medium
from tests.delivery.conftest import DELIVERY_MEDIA, Project, ProjectMaker
from tests.discovery.plugins import OFFICIAL, use_plugin_source

COUNT = 10_000
DELIVERY = {"ack-timeout": 3.0}


def kill_and_restart(project: Project, handled: int) -> None:
    """SIGKILL the project's node, wait a random moment, and run it again."""
    assert project.node.stop(signal.SIGKILL) == -signal.SIGKILL
    print(f"killed the {project.root.name} with {handled} handled")
    time.sleep(random.uniform(0.0, 0.5))
    project.start()


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(600)  # its own waits are budgeted per phase; a loaded machine needs them
@pytest.mark.parametrize("name", list(DELIVERY_MEDIA))
def test_nothing_lost_nothing_twice_through_kills(name: str, delivery_project: ProjectMaker,
                                                  tmp_path: Path) -> None:
    medium = DELIVERY_MEDIA[name]
    medium.require()
    count = COUNT
    seed = random.randrange(1 << 30)
    random.seed(seed)
    print(f"kill moments: random seed {seed}")

    receiver = delivery_project("receiver", medium, delivery=DELIVERY)
    receiver.start()
    sender = delivery_project("sender", medium, delivery=DELIVERY,
                              connect=[receiver.node.address],
                              tally={"to": receiver.node.peer_id, "count": count})
    sender.start()

    def handled() -> int:
        return len(receiver.tallies())

    budget = 60 + count / 100
    for fraction, victim in ((random.uniform(0.1, 0.3), receiver),
                             (random.uniform(0.35, 0.6), sender),
                             (random.uniform(0.65, 0.9), receiver)):
        receiver.wait_until(f"{fraction:.0%} of {count} handled",
                            lambda f=fraction: handled() >= f * count, budget)
        kill_and_restart(victim, handled())

    receiver.wait_until(f"all {count} handled", lambda: handled() == count, budget)
    tallies = receiver.tallies()
    assert sorted(tallies) == list(range(count))
    twice = {seq: n for seq, n in tallies.items() if n != 1}
    assert not twice, f"handled more than once: {dict(list(twice.items())[:10])}"
    sender.wait_until("the outbox empties", lambda: sender.outbox() == 0, 60)

    check_retries_and_dead_letters(receiver, sender, medium, tmp_path)


def check_retries_and_dead_letters(receiver: Project, sender: Project, medium: Medium,
                                   tmp_path: Path) -> None:
    address = receiver.node.address

    # Fails on attempts 1 and 2, succeeds on the 3rd (immediate retries).
    # Over an inbox medium the CLI stores the message for the receiver (no handshake).
    code, _, err = sender.cli("send", address, "flaky", '{"n": 1}')
    assert code == 0 and ("(acknowledged)" in err or "(stored for" in err), err
    receiver.wait_until("flaky handled", lambda: receiver.state("flaky/") != {}, 30)
    assert list(receiver.state("flaky/").values()) == [3]

    # Always fails: dead-lettered after (1 + 1 immediate) x (1 + 2 delayed) attempts.
    code, _, err = sender.cli("send", address, "doomed", '{"order": 7}')
    assert code == 0 and ("(acknowledged)" in err or "(stored for" in err), err

    def dead() -> list[dict[str, Any]]:
        return list(receiver.cli_json("dead", "list"))

    receiver.wait_until("doomed dead-lettered", lambda: len(dead()) == 1, 30)
    letter = dead()[0]
    assert (letter["topic"], letter["attempts"], letter["direction"]) == ("doomed", 6, "in")
    assert "RuntimeError: doomed until the fix is in" in letter["error"]
    assert json.loads(letter["body"]) == {"order": 7}
    shown = receiver.cli_json("dead", "show", str(letter["id"]))
    assert "Traceback" in shown["traceback"] and "doomed" in shown["traceback"]

    # The fix, then `dead retry` through the running node: the handler gets it.
    Path(receiver.root / "fixed").touch()
    code, out, err = receiver.cli("dead", "retry", "--all")
    assert code == 0 and "sent 1 dead letters back" in out, out + err
    receiver.wait_until("doomed handled after the fix",
                        lambda: list(receiver.state("doomed/").values()) == [{"order": 7}], 30)
    assert dead() == []

    # A body the codec cannot decode: straight to the dead letters, no retries.
    asyncio.run(send_poison(medium, address, receiver.node.peer_id, tmp_path / "poison"))
    receiver.wait_until("the poison dead-lettered", lambda: len(dead()) == 1, 30)
    poison = dead()[0]
    assert poison["topic"] == "tally" and poison["attempts"] == 0
    assert poison["reason"].startswith("poison message: the body cannot be decoded")
    stats = receiver.cli_json("peers", "--stats")
    assert stats["topics"]["flaky"]["retried"] == 2
    assert stats["topics"]["doomed"]["dead_lettered"] == 1
    assert stats["topics"]["doomed"]["failed"] == 1  # its handler failed for good
    assert stats["topics"]["tally"]["dead_lettered"] == 1
    assert stats["topics"]["tally"].get("failed", 0) == 0  # undecodable: no handler ran
    assert receiver.node.stop() == 0 and sender.node.stop() == 0


class Garbage(Codec):
    """Claims JSON, writes bytes no JSON codec can read."""

    content_type = "application/json"

    def encode(self, value: Any) -> bytes:
        return b"\xff\xfe this is not json"

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


async def send_poison(medium: Medium, address: str, peer: str, state: Path) -> None:
    """From an in-process node whose codec writes garbage: one tally message."""
    use_plugin_source(medium.plugin)
    module = importlib.import_module("p2phost_" + medium.plugin.replace("-", "_"))
    metadata = PluginMetadata.from_pyproject(OFFICIAL / medium.plugin / "pyproject.toml")
    identity = Identity.generate()
    context = PluginContext(medium.plugin, metadata.config.validate(medium.config, medium.plugin),
                            identity.peer_id, state)
    transports = {scheme: t for t in module.p2phost_transports(context) for scheme in t.schemes}
    node = Node(identity, transports=transports, codecs={"application/json": Garbage()},
                options=NodeOptions(drain_timeout=5.0))
    async with node:
        await node.connect(address)
        await node.send(peer, "tally", {"seq": -1})
        assert await node.delivery.settle(20) == 0, "the poison message was not acknowledged"
