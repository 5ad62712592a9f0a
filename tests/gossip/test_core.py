"""The gossip core without a node: caches, scores, ids, the tree's lazy links and repair."""

from __future__ import annotations

from tests.gossip.network import GossipNetwork

from p2phost_gossip import (  # isort: skip
    GossipSettings, InvalidFrame, MessageCache, PeerScores, SeenCache, check_message,
    make_message,
)


def test_the_seen_cache_is_bounded_oldest_first() -> None:
    seen = SeenCache(3)
    assert seen.add("a") and seen.add("b") and seen.add("c")
    assert not seen.add("a")
    assert seen.add("d")
    assert len(seen) == 3 and "a" not in seen and "d" in seen


def test_the_message_cache_forgets_after_history_heartbeats() -> None:
    cache = MessageCache(2)
    cache.put("x", {"id": "x"})
    cache.shift()
    assert cache.get("x") == {"id": "x"}
    cache.shift()
    assert cache.get("x") is None


def test_ids_are_content_addressed() -> None:
    frame = make_message("t", "origin", 7, {"a": 1})
    assert check_message(frame, 1000)[0] == frame["id"]
    frame["data"] = {"a": 2}
    try:
        check_message(frame, 1000)
    except InvalidFrame as exc:
        assert "id does not match" in str(exc)
    else:
        raise AssertionError("a changed message kept its id")
    big = make_message("t", "origin", 8, "x" * 2000)
    try:
        check_message(big, 1000)
    except InvalidFrame as exc:
        assert "too large" in str(exc)
    else:
        raise AssertionError("an oversized message was accepted")


def test_scores_fall_with_penalties_and_decay_back() -> None:
    scores = PeerScores(prune_threshold=-20, graylist_threshold=-80, decay=0.5)
    for _ in range(3):
        scores.penalise("p", "invalid", 10)
    assert scores.prunable("p") and not scores.graylisted("p")
    assert scores.penalties[("p", "invalid")] == 3
    for _ in range(20):
        scores.tick()
    assert scores.score("p") == 0 and not scores.prunable("p")


def test_bad_settings_are_named() -> None:
    assert GossipSettings().check() == []
    bad = dict(GossipSettings(d=4, d_low=6, heartbeat=0).check())
    assert set(bad) == {"d", "heartbeat"}


def test_duplicates_turn_links_lazy_and_a_missing_message_is_repaired() -> None:
    network = GossipNetwork(seed=2)
    a, b, c = (network.add(connect_to=0) for _ in range(3))
    for x, y in ((a, b), (b, c), (a, c)):
        network.connect(x.peer_id, y.peer_id)
    for router in (a, b, c):
        router.subscribe("t")
    network.step()
    network.heartbeat()  # meshes are grafted on the heartbeat
    assert a.mesh["t"] == {b.peer_id: True, c.peer_id: True}
    first = a.publish("t", 1)
    network.step()
    # b and c each got a's copy and then the other's: their b-c link is lazy now.
    assert b.mesh["t"][c.peer_id] is False and c.mesh["t"][b.peer_id] is False
    assert b.counters["duplicates"] == 1
    assert first in network.delivered[c.peer_id]
    # a's link to c breaks silently (a drops what it sends c): c is repaired through b.
    network.connections[a.peer_id].discard(c.peer_id)
    second = a.publish("t", 2)
    network.step()
    assert second not in network.delivered[c.peer_id]
    network.heartbeat()  # b announces it (IHAVE)
    network.heartbeat()  # c asks (IWANT) after graft_timeout; b answers, b-c is eager again
    assert second in network.delivered[c.peer_id]
    assert c.counters["iwant sent"] == 1 and b.counters["iwant answered"] == 1
    assert b.mesh["t"][c.peer_id] is True and c.mesh["t"][b.peer_id] is True


def test_a_publisher_outside_the_topic_uses_a_bounded_fanout() -> None:
    network = GossipNetwork(seed=3)
    routers = [network.add(connect_to=20) for _ in range(30)]
    publisher = routers[0]
    for router in routers[1:]:
        router.subscribe("t")
    network.step()
    network.heartbeat()
    publisher.publish("t", "hello")
    assert len(publisher.fanout["t"]) == publisher.settings.d
    assert "t" not in publisher.mesh
    network.step()
    network.heartbeat()
    assert all(len(network.delivered[r.peer_id]) == 1 for r in routers[1:])
    network.heartbeat(publisher.settings.fanout_ttl + 1)
    assert "t" not in publisher.fanout


def test_a_fanout_whose_peers_all_asked_for_lazy_pushes_again() -> None:
    network = GossipNetwork(seed=6)
    routers = [network.add(connect_to=20) for _ in range(12)]
    publisher = routers[0]
    for router in routers[1:]:
        router.subscribe("t")
    network.step()
    network.heartbeat()
    publisher.publish("t", 1)
    links = publisher.fanout["t"]
    for peer_id in links:
        publisher.handle(peer_id, {"op": "lazy", "topic": "t"})
    assert not any(links.values())
    second = publisher.publish("t", 2)
    assert all(links.values())
    network.step()
    assert all(second in network.delivered[r.peer_id] for r in routers[1:])


def test_a_graft_that_comes_before_its_senders_subscribe_stays_in_the_mesh() -> None:
    # A peer's GRAFT can reach this node before its SUBSCRIBE (its subscribe frame was
    # lost, or the connection came back and only one side said its topics again). The
    # heartbeat pruned such a mesh peer as not subscribed, with a 60 s backoff both
    # ways: the line of nodes in tests/gossip/test_traces.py now and then never grafted.
    network = GossipNetwork(seed=4)
    node, asker = network.add(connect_to=0), network.add(connect_to=0)
    node.subscribe("t")
    node.peer_joined(asker.peer_id)
    node.handle(asker.peer_id, {"op": "graft", "topic": "t"})
    network.heartbeat()
    assert asker.peer_id in node.mesh["t"], "a grafting peer was pruned as not subscribed"
    assert ("t", asker.peer_id) not in node._backoff
