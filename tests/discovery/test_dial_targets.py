"""Dial targets belong to records: the node's redial loops, with a scripted dialler."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from p2phost._cli._discovery_status import discovery_lines
from p2phost._runtime._errors import ConnectionRefusedByPeer
from p2phost._runtime.node._targets import DialTargets
from p2phost._runtime.wire._refusal import peer_refused, refused_after_hellos
from p2phost_sdk import Backoff, Identity, PeerRecord, PeerUnavailable
from p2phost_sdk.testing.discovery import wait_until

PEER = Identity.generate().peer_id
OTHER = Identity.generate().peer_id


@dataclass
class Link:
    """A connected peer: set ``gone`` (after ``reason``) to end its connection."""

    gone: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    refusal: ConnectionRefusedByPeer | None = None


#: The peer's trust policy refusing this node, as its GOODBYE says it.
UNTRUSTED = f"peer {PEER} is refused by the trust policy: not in the allowlist"


def refused_dial(address: str, said: str = UNTRUSTED) -> PeerUnavailable:
    """A dial the peer answered with a GOODBYE saying ``said``, as the node's dialler
    raises it: the refusal is its cause."""
    refusal = peer_refused(said)
    exc = PeerUnavailable(f"{address}: handshake failed: {refusal}")
    exc.__cause__ = refusal
    return exc


class Dialler:
    """Answers dials as scripted: each address is the peer it names, or unreachable."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers = answers
        self.dials: list[str] = []
        self.connected: dict[str, Link] = {}

    async def connect(self, address: str, expected: str | None) -> str:
        self.dials.append(address)
        await asyncio.sleep(0)
        peer = self.answers.get(address)
        if peer is None:
            raise PeerUnavailable(f"{address}: connection refused")
        if expected is not None and peer != expected:
            raise PeerUnavailable(f"{address}: handshake failed: expected peer {expected}, "
                                  f"reached {peer}")
        self.connected[peer] = Link()
        return peer

    def gone(self, peer_id: str) -> Link | None:
        return self.connected.get(peer_id)


def targets_for(dialler: Dialler, tasks: set[asyncio.Task[None]],
                backoff: Backoff | None = None) -> DialTargets:
    def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        return task
    return DialTargets(connect=dialler.connect, gone=dialler.gone, spawn=spawn,
                       backoff=backoff or Backoff(0.01, 0.05),
                       own_addresses=lambda: ["tcp://me:1"])


async def test_an_address_reaching_another_peer_is_dropped_at_once_and_counted() -> None:
    dialler = Dialler({"tcp://a:1": OTHER, "tcp://b:1": PEER})
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks)
    targets.update(PeerRecord(("tcp://a:1", "tcp://b:1", "tcp://me:1"), PEER, "beacon"))
    await wait_until(lambda: PEER in dialler.connected, 2, "connecting at the right address")
    assert dialler.dials == ["tcp://a:1", "tcp://b:1"]  # never our own address
    assert targets.counters["wrong_peer"] == 1 and targets.counters["connected"] == 1
    dialler.connected.pop(PEER).gone.set()  # the peer goes away: redial, but never at tcp://a:1
    await wait_until(lambda: PEER in dialler.connected, 2, "reconnecting")
    assert dialler.dials == ["tcp://a:1", "tcp://b:1", "tcp://b:1"]
    targets.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_target_and_its_backoff_go_with_the_last_record() -> None:
    dialler = Dialler({})  # nothing answers
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks)
    record = PeerRecord(("tcp://x:1",), PEER, "beacon")
    targets.update(record)
    targets.update(PeerRecord(("tcp://x:1",), PEER, "mdns"))
    # A dial is listed as it starts and counted as it fails: wait for the counts.
    await wait_until(lambda: targets.counters["unreachable"] >= 3, 2, "redialling with backoff")
    targets.lost(record)  # mDNS still lists it: still a target
    assert PEER in targets and len(dialler.dials) >= 3
    targets.lost(PeerRecord(("tcp://x:1",), PEER, "mdns"))
    assert PEER not in targets
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(t.done() for t in tasks)
    count = len(dialler.dials)
    await asyncio.sleep(0.2)
    assert len(dialler.dials) == count  # no dial after the record is gone


async def test_a_record_with_new_addresses_replaces_the_old_one() -> None:
    dialler = Dialler({"tcp://new:1": PEER})
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks)
    targets.update(PeerRecord(("tcp://old:1",), PEER, "beacon"))
    await wait_until(lambda: "tcp://old:1" in dialler.dials, 2, "dialling the old address")
    targets.update(PeerRecord(("tcp://new:1",), PEER, "beacon"))  # it moved
    await wait_until(lambda: PEER in dialler.connected, 2, "connecting at the new address")
    dialler.connected.pop(PEER).gone.set()
    count = dialler.dials.count("tcp://old:1")
    await wait_until(lambda: PEER in dialler.connected, 2, "reconnecting")
    assert dialler.dials.count("tcp://old:1") == count
    targets.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_refused_handshake_is_counted_refused_with_its_reason_not_unreachable() -> None:
    reason = (f"tcp://r:1: handshake failed: the peer refused the connection: peer {PEER} "
              "is refused by the trust policy: not in the allowlist")

    class Refusing(Dialler):
        async def connect(self, address: str, expected: str | None) -> str:
            self.dials.append(address)
            await asyncio.sleep(0)
            raise refused_dial(address)

    dialler = Refusing({})
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks)
    targets.update(PeerRecord(("tcp://r:1",), None, "static-discovery"))
    await wait_until(lambda: targets.counters["refused"] >= 2, 2, "redialling the refuser")
    snapshot = targets.snapshot()
    assert snapshot["unreachable"] == 0 and snapshot["refused_reason"] == reason
    lines = discovery_lines({"discovery": {"plugins": [], "dialling": snapshot}})
    assert [ok for ok, _, _ in lines] == [True, False]  # doctor reports it as a problem
    assert "refused_reason" not in lines[0][1] and "not in the allowlist" in lines[1][1]
    assert lines[1][2] is not None and "p2phost trust add" in lines[1][2]
    targets.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_peer_that_comes_up_and_refuses_is_logged_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A dialler started before its peer logs "connection refused" first; the trust
    policy's refusal once the peer runs is logged at its first dial, not at the tenth
    failure (~20 s of backoff later), and only once while it stays the same."""
    reason = (f"tcp://r:1: handshake failed: the peer refused the connection: peer {PEER} "
              "is refused by the trust policy: not in the allowlist")

    class UpThenRefusing(Dialler):
        async def connect(self, address: str, expected: str | None) -> str:
            self.dials.append(address)
            await asyncio.sleep(0)
            if len(self.dials) <= 2:
                raise PeerUnavailable(f"{address}: connection refused")
            raise refused_dial(address)

    dialler = UpThenRefusing({})
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks)
    with caplog.at_level(logging.WARNING, logger="p2phost.node"):
        targets.update(PeerRecord(("tcp://r:1",), None, "static-discovery"))
        await wait_until(lambda: targets.counters["refused"] >= 5, 2, "redialling the refuser")
    targets.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    logged = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(logged) == 2, logged  # the first failure, then the refusal at once
    assert logged[0].endswith("connection refused") and logged[1].endswith(reason)


async def refuse_each_connection(dialler: Dialler, said: str) -> None:
    """End each connection to PEER as it opens with the peer's GOODBYE saying ``said``
    (a refusal right after the hellos)."""
    while True:
        await wait_until(lambda: PEER in dialler.connected, 5, "a dial")
        link = dialler.connected.pop(PEER)
        link.reason = f"the peer said goodbye ({said})"
        link.refusal = refused_after_hellos(said)
        link.gone.set()


async def test_a_connection_refused_after_the_hellos_is_a_refused_dial_with_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    """A peer that ends each connection as it opens (an older listener refusing our hello
    after sending its own, its peer limit reached meanwhile) is redialled with growing
    backoff, counted refused with its reason, and logged once; not redialled at once."""
    said = (f"peer {PEER} is refused by the trust policy: it calls itself 'alice', but "
            "'alice' is known as another key")
    reason = f"the peer said goodbye ({said})"
    dialler = Dialler({"tcp://r:1": PEER})
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks, Backoff(0.04, 10.0))
    refuser = asyncio.create_task(refuse_each_connection(dialler, said))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="p2phost.node"):
        targets.update(PeerRecord(("tcp://r:1",), PEER, "beacon"))
        await asyncio.sleep(1.0)
    targets.close()
    refuser.cancel()
    await asyncio.gather(refuser, *tasks, return_exceptions=True)
    # Backoff 0.04 s doubling: waits of 0.02-0.04, 0.04-0.08, ... 0.32-0.64 s: ~6 dials in
    # 1 s (at once, there would be one every 0.02-0.04 s: 25 or more).
    assert 3 <= len(dialler.dials) <= 8, (len(dialler.dials), time.monotonic() - started)
    assert targets.counters["refused"] >= len(dialler.dials) - 1
    assert targets.refused_reason == reason
    logged = [r.getMessage() for r in caplog.records if "as it opened" in r.getMessage()]
    assert len(logged) == 1 and logged[0].endswith(reason), logged


async def test_a_peer_limit_refusal_after_the_hellos_keeps_its_own_fix() -> None:
    """An older listener refusing at its peer limit after its hello: doctor's line gives
    the peer limit's fix, not the trust policy's."""
    said = "peer limit reached (1)"
    dialler = Dialler({"tcp://r:1": PEER})
    tasks: set[asyncio.Task[None]] = set()
    targets = targets_for(dialler, tasks, Backoff(0.01, 0.05))
    refuser = asyncio.create_task(refuse_each_connection(dialler, said))
    targets.update(PeerRecord(("tcp://r:1",), PEER, "beacon"))
    await wait_until(lambda: targets.counters["refused"] >= 1, 2, "a refusal")
    targets.close()
    refuser.cancel()
    await asyncio.gather(refuser, *tasks, return_exceptions=True)
    lines = discovery_lines({"discovery": {"plugins": [], "dialling": targets.snapshot()}})
    fix = lines[-1][2]
    assert fix is not None and "peer-limit" in fix and "trust add" not in fix, lines
