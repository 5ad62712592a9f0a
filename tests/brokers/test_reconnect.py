"""A broker's connections cut mid-run: nodes reconnect and carry on.

Both nodes reach the broker through a TCP proxy process; killing the proxy cuts every
connection at once, as a broker restart would, without stopping the shared service.
On durable media nothing sent around the cut is lost or repeated; on core NATS (which
holds nothing) the connection is given up and dialled again, and later messages flow.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.brokers.conftest import DURABLE, MEDIA, NodeMaker, ProxyMaker, bursting

NOTES = 200


@pytest.mark.services
@pytest.mark.parametrize("medium", ["redis", "nats", *DURABLE[1:]])
def test_nodes_carry_on_after_their_broker_connections_are_cut(
    medium: str, proxy_to: ProxyMaker, make_node: NodeMaker
) -> None:
    over = MEDIA[medium]
    over.require()
    assert over.service is not None
    proxy = proxy_to(over.service[1])
    url = proxy.url(over.url)
    bob = make_node("bob", over, url=url, ledger={"delay": 0.002})
    alice = make_node("alice", over, url=url, connect=[bob.address])
    alice.wait_connected([bob.peer_id])

    with bursting(alice, bob, NOTES) as burst:
        bob.ledger.wait(alice.peer_id, NOTES // 5, 20)
        proxy.cut()
        time.sleep(1.0)
        proxy.restore()
        if medium in DURABLE:
            got = bob.ledger.wait(alice.peer_id, NOTES, 45)
            assert got == [{"n": n} for n in range(NOTES)], f"{len(got)}\n{bob.process.stderr}"
        out, err = burst.communicate(timeout=60)
    if medium in DURABLE:
        assert burst.returncode == 0 and json.loads(out) == NOTES, err

    # Afterwards (on core NATS once the broken connection was replaced): all of it again.
    # Core NATS holds nothing: a burst sent on the cut connection before the receiver saw
    # its gap (and replaced the connection) is lost with it, so there it is sent again
    # until one arrives whole; a durable medium must deliver the first one.
    expected = [{"tag": "after", "n": n} for n in range(50)]
    deadline = time.monotonic() + 45
    while True:
        before = len(bob.ledger.bodies(alice.peer_id))
        code, out, err = alice.cli("send", alice.address, "burst", json.dumps(
            {"to": bob.peer_id, "count": 50, "tag": "after"}), "--request")
        if code == 0:
            got = bob.ledger.wait(alice.peer_id, before + 50, 20 if medium in DURABLE else 10)
            after = [b for b in got if "tag" in b]
            if medium in DURABLE or after[-50:] == expected or time.monotonic() > deadline:
                break
        elif time.monotonic() > deadline:
            break
        else:
            time.sleep(0.5)
    assert code == 0, out + err
    assert after[-50:] == expected, bob.process.stderr
    code, out, err = alice.cli("ping", bob.address, "--count", "2", "--interval", "0")
    assert code == 0, out + err
    if medium == "amqp":  # the connection's watcher and the inbox's reader both saw it
        assert bob.process.stderr.count("lost the AMQP broker") == 1, bob.process.stderr


@pytest.mark.services
@pytest.mark.parametrize("how", ["killed", "silent"])
@pytest.mark.parametrize("medium", ["redis", "nats", "nats-jetstream", "mqtt", "amqp",
                                    "postgresql"])
def test_a_lost_broker_is_logged_within_its_keepalive(
    medium: str, how: str, proxy_to: ProxyMaker, make_node: NodeMaker
) -> None:
    """The node says it lost its broker, naming it, soon after: at once when the socket
    is closed (a killed server), within its keepalive when nothing answers any more (the
    proxy stopped, as a killed host or a cut network: no FIN, no RST)."""
    over = MEDIA[medium]
    over.require()
    assert over.service is not None
    proxy = proxy_to(over.service[1])
    url = proxy.url(over.url)
    bob = make_node("bob", over, url=url)
    code, out, err = bob.cli("ping", bob.address, "--count", "1", "--interval", "0")
    assert code == 0, out + err
    before = len(bob.process.stderr)
    started = time.monotonic()
    if how == "killed":
        proxy.cut()
    else:
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGSTOP)
    within = 5.0 if how == "killed" else 40.0
    try:
        while not any("lost" in line and f"127.0.0.1:{proxy.port}" in line
                      for line in bob.process.stderr[before:].splitlines()):
            assert time.monotonic() - started < within, (
                f"nothing said within {within:g}s:\n{bob.process.stderr[before:][-3000:]}")
            time.sleep(0.1)
    finally:
        if proxy.process is not None:
            proxy.process.send_signal(signal.SIGCONT)
    print(f"{medium}, {how}: said lost after {time.monotonic() - started:.1f} s")
