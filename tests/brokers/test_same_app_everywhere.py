"""One scenario, the same apps, over every medium: only the transport in p2phost.toml changes.

Three ``p2phost run`` processes (alice dials bob and carol) and the CLI as a client:
a message, request/reply (ping and echo), a publish that reaches both subscribers, and
1,000 messages that arrive in order.
"""

from __future__ import annotations

import pytest

from tests.brokers.conftest import MEDIA, STREAMS, NodeMaker

BURST = 1000


@pytest.mark.services
@pytest.mark.parametrize("medium", [*STREAMS, "redis", "nats", "mqtt", "amqp", "postgresql"])
def test_the_same_app_over(medium: str, make_node: NodeMaker) -> None:
    over = MEDIA[medium]
    over.require()
    bob, carol = make_node("bob", over), make_node("carol", over)
    alice = make_node("alice", over, connect=[bob.address, carol.address])
    if over.name not in STREAMS:
        assert bob.address == f"{over.url.replace('guest:guest@', 'guest@')}#{bob.peer_id}"
    alice.wait_connected([bob.peer_id, carol.peer_id])

    # A message, from a short-lived client node (alice's peer id, its own reply inbox).
    code, _, err = alice.cli("send", bob.address, "note", '{"hello": "bob"}')
    assert code == 0, err
    assert bob.ledger.wait(alice.peer_id, 1, 10) == [{"hello": "bob"}]

    # Request/reply: ping (echo) and a request answered with the body.
    code, out, err = alice.cli("ping", carol.address, "--count", "2", "--interval", "0")
    assert code == 0 and "2 sent, 2 replies, 0 lost" in out, out + err
    assert alice.request(carol.address, "echo", {"a": [1, 2]}) == {"a": [1, 2]}

    # Publish from alice's node: both subscribers (and only they) get it.
    assert alice.request(alice.address, "announce",
                         {"topic": "note", "body": {"news": 1}}) == 2
    assert bob.ledger.wait(alice.peer_id, 2, 10) == [{"hello": "bob"}, {"news": 1}]
    assert carol.ledger.wait(alice.peer_id, 1, 10) == [{"news": 1}]

    # 1,000 messages from alice's node to bob's, handled in order, each once.
    assert alice.request(alice.address, "burst", {"to": bob.peer_id, "count": BURST}) == BURST
    got = bob.ledger.wait(alice.peer_id, BURST + 2, 30)
    assert got == [{"hello": "bob"}, {"news": 1}] + [{"n": n} for n in range(BURST)]

