"""200 gossip routers in one process: delivery, copies per message, links, churn, floods."""

from __future__ import annotations

import json
import statistics

from tests.gossip.network import GossipNetwork

from p2phost_gossip import Router, make_message  # isort: skip

TOPIC = "news"


def build(size: int, seed: int = 1) -> tuple[GossipNetwork, Router, list[Router]]:
    """One publisher (not subscribed: it uses fan-out) and ``size - 1`` subscribers."""
    network = GossipNetwork(seed)
    routers = [network.add() for _ in range(size)]
    publisher, subscribers = routers[0], routers[1:]
    for router in subscribers:
        router.subscribe(TOPIC)
    network.step()
    for _ in range(3):  # meshes settle
        network.heartbeat()
    return network, publisher, subscribers


def test_200_nodes_get_every_message_about_once() -> None:
    network, publisher, subscribers = build(200)
    before = dict(network.copies)
    ids = []
    for i in range(100):
        ids.append(publisher.publish(TOPIC, {"n": i, "text": f"message {i}"}))
        network.step()
        network.heartbeat()
    for _ in range(3):
        network.heartbeat()
    assert all(set(ids) <= network.delivered[r.peer_id] for r in subscribers)
    copies = [network.copies[r.peer_id] - before.get(r.peer_id, 0) for r in subscribers]
    mean = statistics.mean(copies) / len(ids)
    assert mean <= 3, mean
    assert max(len(r.links()) for r in network.routers.values()) <= 20
    assert all(len(r.mesh[TOPIC]) <= r.settings.d_high for r in subscribers)
    assert statistics.mean(len(r.mesh[TOPIC]) for r in subscribers) >= 6
    print(f"mean copies per node per message: {mean:.2f}")


def test_10_percent_churn_during_the_run_still_delivers() -> None:
    network, publisher, subscribers = build(200, seed=5)
    rng = network.rng
    expected: dict[str, set[str]] = {r.peer_id: set() for r in subscribers}
    churn_at = set(rng.sample(range(5, 95), 20))
    for i in range(100):
        message_id = publisher.publish(TOPIC, {"n": i})
        for router in network.alive():
            if router.peer_id in expected:
                expected[router.peer_id].add(message_id)
        if i in churn_at:
            # Mid-flight: part of this message's frames are delivered, then a node dies
            # (and a new one joins, connected to random live nodes).
            network.step(limit=rng.randrange(1, 300))
            victim = rng.choice([r for r in network.alive() if r is not publisher])
            network.kill(victim.peer_id)
            joiner = network.add()
            joiner.subscribe(TOPIC)
            expected[joiner.peer_id] = set()
        network.step()
        network.heartbeat()
    for _ in range(5):
        network.heartbeat()
    survivors = [p for p in expected if p not in network.dead]
    wanted = sum(len(expected[p]) for p in survivors)
    got = sum(len(expected[p] & network.delivered[p]) for p in survivors)
    assert len(network.dead) == 20
    assert got >= 0.995 * wanted, (got, wanted)
    print(f"churn: {got}/{wanted} delivered")


def test_a_flood_of_invalid_messages_is_refused_scored_down_and_counted() -> None:
    network, publisher, subscribers = build(40, seed=3)
    attacker, victim = subscribers[0], subscribers[1]
    if victim.peer_id not in network.connections[attacker.peer_id]:
        network.connect(attacker.peer_id, victim.peer_id)
    network.step()
    for i in range(200):
        forged = make_message(TOPIC, attacker.peer_id, i, {"n": i})
        forged["data"] = {"n": i, "evil": True}  # the id no longer matches the content
        network.queue.append((attacker.peer_id, victim.peer_id, json.dumps(forged)))
    network.step()
    assert victim.counters["invalid: id does not match the content"] >= 1
    assert victim.counters["invalid"] + victim.counters["graylisted"] == 200
    assert victim.counters["graylisted"] > 0  # later frames were dropped unread
    assert victim.scores.score(attacker.peer_id) < victim.settings.graylist_threshold
    assert attacker.peer_id not in victim.mesh[TOPIC]
    assert victim.counters["delivered"] == 0  # none of it reached the subscriber
    network.heartbeat()
    assert attacker.peer_id not in victim.mesh[TOPIC]  # and it is not grafted back
    # Honest traffic still flows to the victim.
    message_id = publisher.publish(TOPIC, {"ok": True})
    network.step()
    for _ in range(3):
        network.heartbeat()
    assert message_id in network.delivered[victim.peer_id]


def test_a_duplicate_flood_costs_the_flooder() -> None:
    network, publisher, subscribers = build(20, seed=4)
    message_id = publisher.publish(TOPIC, {"n": 1})
    network.step()
    flooder, victim = subscribers[0], subscribers[1]
    if victim.peer_id not in network.connections[flooder.peer_id]:
        network.connect(flooder.peer_id, victim.peer_id)
    frame = flooder.cache.get(message_id)
    assert frame is not None
    for _ in range(3):
        for _ in range(20):
            network.queue.append((flooder.peer_id, victim.peer_id, json.dumps(frame)))
        network.step()
        network.clock.now += 1.5
    assert victim.counters["duplicate flood"] >= 20
    assert victim.scores.score(flooder.peer_id) < 0
