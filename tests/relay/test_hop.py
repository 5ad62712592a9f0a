"""The relay's bookkeeping and a circuit end, without nodes: every limit, and a reader
that never reads."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from p2phost_sdk import AddressError
from tests.discovery.plugins import use_plugin_source

use_plugin_source("relay")

from p2phost_relay import Circuit, Hop, HopLimits, RelayError, RelayRefused, parse  # noqa: E402
from p2phost_relay._hop import Closed, End  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reservations_expire_and_circuits_are_bounded_per_peer_and_in_time() -> None:
    clock = Clock()
    hop = Hop(HopLimits(reservations=2, reservation_ttl=10, circuits=3, circuits_per_peer=2,
                        circuit_bytes=100, circuit_seconds=5), clock=clock)
    assert hop.reserve("t1") == 10 and hop.reserve("t2") == 10
    with pytest.raises(RelayRefused, match="reservation limit"):
        hop.reserve("t3")
    first = hop.open(End("d", "c1"), "t1")
    hop.open(End("d", "c2"), "t2")
    with pytest.raises(RelayRefused, match="peer circuit limit"):
        hop.open(End("d", "c3"), "t1")
    with pytest.raises(RelayRefused, match="malformed"):
        hop.open(End("t1", "c9"), "t1")
    assert hop.route(first.dialler, 60) == first.target
    assert hop.route(first.target, 30) == first.dialler
    closed = hop.route(first.dialler, 20)  # 110 > 100 bytes
    assert isinstance(closed, Closed) and closed.other == first.target
    assert hop.counters["closed: byte limit"] == 1 and hop.active_circuits() == 1
    clock.now = 6
    [(dialler, target)] = hop.overdue()
    assert dialler == End("d", "c2") and target.peer == "t2"
    clock.now = 11  # the reservations lapsed
    with pytest.raises(RelayRefused, match="no reservation"):
        hop.open(End("d", "c4"), "t1")
    assert hop.active_reservations() == 0


def test_a_lost_peer_takes_its_reservation_and_circuits() -> None:
    hop = Hop()
    hop.reserve("t")
    circuit = hop.open(End("d", "c"), "t")
    assert hop.peer_gone("t") == [circuit.dialler]
    assert not hop.reserved("t") and hop.active_circuits() == 0


def test_addresses_say_what_is_wrong() -> None:
    peer = "a" * 52
    assert parse(f"relay+tcp://1.2.3.4:7400/p2p-circuit/{peer}", target=True).relay \
        == "tcp://1.2.3.4:7400"
    assert parse("relay+ws://h:1/path", target=False).relay == "ws://h:1/path"
    # served by this plugin as the host reads schemes (case-insensitive), so parsed alike
    assert parse(f"RELAY+TCP://1.2.3.4:7400/p2p-circuit/{peer}", target=True) \
        == parse(f"relay+tcp://1.2.3.4:7400/p2p-circuit/{peer}", target=True)
    for bad in ("tcp://1.2.3.4:7400", "relay+udp://x:1/p2p-circuit/" + peer,
                "relay+tcp://x:1/p2p-circuit/notapeer"):
        with pytest.raises(RelayError, match="bad address") as raised:
            parse(bad, target=True)
        assert isinstance(raised.value, AddressError)  # a usage error to the host


async def test_a_reader_that_never_reads_ends_the_circuit_after_the_timeout() -> None:
    posted: list[dict[str, Any]] = []

    async def post(body: dict[str, Any]) -> None:
        posted.append(body)

    ended: list[Circuit] = []
    circuit = Circuit("relay", "c", post, local_address="", remote_address="",
                      remote_peer_id=None, max_frame_size=1000, buffer_bytes=10,
                      timeout=0.2, on_close=ended.append)
    frame = base64.b64encode(b"x" * 20).decode()
    await circuit.feed(frame)  # room for one
    await asyncio.wait_for(circuit.feed(frame), 2)  # waits 0.2 s, then gives up
    assert circuit.ended is not None and "unread" in circuit.ended
    assert ended == [circuit] and posted[-1]["op"] == "close"
    assert await circuit.recv() == b"x" * 20  # what was taken is still read
    with pytest.raises(Exception, match="closed"):
        await circuit.recv()
    await circuit.feed(base64.b64encode(b"x" * 2000).decode())  # after the end: ignored
