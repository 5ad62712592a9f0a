"""Fuzzing a running node: random and mutated handshake messages and frames, before and
inside the secured channel, thrown at a ``p2phost run`` process over TCP for a bounded
number of examples. The node never crashes, logs no internal error, and keeps serving a
well-behaved peer that stays connected all along (checked after every attack).

The coverage-guided twin of this test is test_fuzz_atheris.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2phost._runtime import Hello, Kind, Node, encode
from p2phost_sdk import Connection, Identity, P2PHostError
from tests.conftest import write_project
from tests.plugins.security_support import initiator_transcript, mutation_of
from tests.runtime.processes import RunningNode

from .conftest import SECURITY, TIMEOUT, TcpTransport, tcp_node

EXAMPLES = 100
_GENUINE = [
    Hello(peer_id=Identity.generate().peer_id, codecs=("application/json",), topics=("echo",),
          session="s", nonce="n").to_frame(),
    encode(Kind.REQUEST, 7, b"echo", json.dumps({"a": [1, 2]}).encode(), deadline=2**40),
    encode(Kind.MESSAGE, 8, b"echo", b"{}"),
    encode(Kind.REPLY, 9, body=b"1", correlation_id=3),
    encode(Kind.GOODBYE, 0, body=b"bye"),
]


class Target:
    """The node under attack, the loop the attacks run in, and a well-behaved peer."""

    def __init__(self, security: str, node: RunningNode) -> None:
        self.security, self.node = security, node
        self.loop = asyncio.new_event_loop()
        self.friend: Node = tcp_node(security, listen=False)
        self.transcript: list[bytes] = self.loop.run_until_complete(
            initiator_transcript(SECURITY[security]))
        self.loop.run_until_complete(self.friend.start())
        self.peer = self.loop.run_until_complete(self.friend.connect(node.address))
        self.rounds = 0

    def close(self) -> None:
        self.loop.run_until_complete(self.friend.close())
        self.loop.close()


@pytest.fixture(scope="module", params=list(SECURITY))
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           official_wheels: dict[str, Path]) -> Iterator[Target]:
    plugins = ["tcp-transport", "json-codec", "echo", f"{request.param}-security"]
    root = write_project(tmp_path_factory.mktemp("fuzzed") / "node", plugins, name="fuzzed",
                         wheels=[official_wheels[p] for p in plugins])
    node = RunningNode(root)
    target = Target(str(request.param), node)
    # One bad frame inside a channel, whatever hypothesis draws: the check below that
    # both layers were reached would otherwise depend on the draws (a run of tls draws
    # once reached no channel, and the failed handshakes' lines are rate-limited).
    target.loop.run_until_complete(_inside(target, [b"\xff" * 16]))
    try:
        yield target
    finally:
        target.close()
        alive = node.process.poll() is None
        code = node.stop()
        assert alive and code == 0, f"the node died under fuzzing:\n{node.stderr}"
        assert "Traceback" not in node.stderr and "internal error" not in node.stderr, \
            node.stderr
        # Both layers were reached: refused handshakes, and bad frames inside the channel.
        assert target.rounds > 0 and "closed connection from" in node.stderr, node.stderr
        assert "protocol error" in node.stderr, node.stderr


def _frames(base: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.one_of(st.binary(max_size=512), st.sampled_from(base).flatmap(mutation_of),
                              st.sampled_from(base)), min_size=1, max_size=5)


#: (where the attack goes, what it sends): raw bytes on the socket, frames as the first
#: (handshake) messages, or frames inside a channel the attacker secured with its own key.
ATTACKS = st.one_of(
    st.tuples(st.just("raw"), st.lists(st.binary(min_size=1, max_size=512), max_size=3)),
    st.tuples(st.just("handshake"), st.just(None)),
    st.tuples(st.just("inside"), _frames(_GENUINE)),
)


async def _raw(address: str, chunks: list[bytes]) -> None:
    parts = urlsplit(address)
    _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    with contextlib.suppress(OSError):
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _send(connection: Connection, frames: list[bytes]) -> None:
    with contextlib.suppress(P2PHostError):
        await connection.send_many(frames)
        # Read what the node answers until it closes (or we stop listening).
        async with asyncio.timeout(0.2):
            while True:
                await connection.recv()
    with contextlib.suppress(P2PHostError):
        await connection.close()


async def _inside(target: Target, payload: list[bytes]) -> None:
    """``payload`` sent after a hello, in a channel secured with an attacker's key."""
    attacker = Identity.generate()
    hello = Hello(peer_id=attacker.peer_id, codecs=("application/json",), session="s",
                  nonce="n").to_frame()
    connection = await TcpTransport().dial(target.node.address, timeout=TIMEOUT)
    secured = await SECURITY[target.security]().secure(
        connection, identity=attacker, initiator=True,
        expected_peer_id=target.node.peer_id, timeout=TIMEOUT)
    with contextlib.suppress(TimeoutError):
        await _send(secured, [hello, *payload])


async def _attack(target: Target, where: str, payload: list[bytes] | None,
                  data: st.DataObject) -> None:
    address = target.node.address
    if where == "raw":
        assert payload is not None
        await _raw(address, payload)
        return
    connection = await TcpTransport().dial(address, timeout=TIMEOUT)
    if where == "handshake":
        frames = data.draw(_frames(target.transcript), label="handshake frames")
        with contextlib.suppress(TimeoutError):
            await _send(connection, frames)
        return
    assert payload is not None
    attacker = Identity.generate()
    if data.draw(st.booleans(), label="hello first"):  # get past the hello to the channel
        payload = [Hello(peer_id=attacker.peer_id, codecs=("application/json",),
                         session="s", nonce="n").to_frame(), *payload]
    with contextlib.suppress(P2PHostError):  # the node may refuse a hurried handshake
        secured = await SECURITY[target.security]().secure(
            connection, identity=attacker, initiator=True,
            expected_peer_id=target.node.peer_id, timeout=TIMEOUT)
        with contextlib.suppress(TimeoutError):
            await _send(secured, payload)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow])
@given(attack=ATTACKS, data=st.data())
def test_a_fuzzed_node_never_crashes_and_keeps_serving(
        target: Target, attack: tuple[str, list[bytes] | None], data: st.DataObject) -> None:
    where, payload = attack

    async def round_trip() -> None:
        async with asyncio.timeout(TIMEOUT):
            await _attack(target, where, payload, data)
            reply = await target.friend.request(target.peer, "echo", {"round": target.rounds})
        assert reply == {"round": target.rounds}
        assert [p.peer_id for p in target.friend.peers()] == [target.node.peer_id]

    target.loop.run_until_complete(round_trip())
    target.rounds += 1

