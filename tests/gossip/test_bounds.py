"""What one peer's frames may cost a router, and repair past one frame's worth of ids.

A peer's ``subscribe`` frames cost this node bounded memory: every topic name it sends is
kept while it is connected, so the names one peer may hold are capped in number and
length (one peer sending 1,000 new names a frame grew a node by 280 MiB in 6 s)."""

from __future__ import annotations

from typing import Any

from p2phost_sdk import Identity
from tests.discovery.plugins import use_plugin_source

use_plugin_source("gossip")

import p2phost_gossip._router as router_module  # noqa: E402
from p2phost_gossip import Router, make_message  # noqa: E402
from p2phost_gossip._router import MAX_PEER_TOPICS, MAX_TOPIC_LENGTH  # noqa: E402


class _Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, peer_id: str, frame: dict[str, Any]) -> None:
        self.sent.append((peer_id, frame))


def test_a_peers_topics_are_bounded_however_many_it_subscribes() -> None:
    router = Router("victim", _Wire())
    router.subscribe("news")
    for frame in range(50):
        topics = [f"{frame}-{i}" for i in range(1000)]
        router.handle("flooder", {"op": "subscribe", "topics": topics})
    assert len(router.peers["flooder"]) <= MAX_PEER_TOPICS
    assert router.counters["invalid: too many or too long topics"] >= 1
    # The flooder is scored down (out of the meshes, then graylisted), not the others.
    assert router.scores.prunable("flooder")


def test_long_topic_names_are_refused_and_honest_subscriptions_kept() -> None:
    router = Router("victim", _Wire())
    router.subscribe("news")
    router.handle("honest", {"op": "subscribe", "topics": ["news", "sport"]})
    router.handle("long", {"op": "subscribe", "topics": ["x" * (MAX_TOPIC_LENGTH + 1)]})
    assert router.peers["honest"] == {"news", "sport"}
    assert router.peers["long"] == set()
    # Saying a topic again costs nothing and is not an offence.
    router.handle("honest", {"op": "subscribe", "topics": ["news"] * 1000})
    assert router.scores.score("honest") == 0


def test_every_missing_message_is_asked_for_not_the_first_500() -> None:
    # A tree parent that died during a burst: its lazy neighbour announced 1,200 messages
    # this node misses. Each round counts a try for every one, so each must be asked.
    now = [0.0]
    wire = _Wire()
    router = Router("victim", wire, clock=lambda: now[0])
    router.subscribe("news")
    router.handle("lazy", {"op": "subscribe", "topics": ["news"]})
    ids = [f"{i:032x}" for i in range(1200)]
    for start in range(0, 1200, 500):
        router.handle("lazy", {"op": "ihave", "topic": "news", "ids": ids[start:start + 500]})
    wire.sent.clear()
    now[0] += 1.0
    router.heartbeat()
    asked = [i for peer, frame in wire.sent if peer == "lazy" and frame["op"] == "iwant"
             for i in frame["ids"]]
    assert sorted(asked) == ids
    assert all(len(frame["ids"]) <= 500 for _, frame in wire.sent if frame["op"] == "iwant")


def test_announcing_messages_one_never_sends_is_scored_until_graylisted() -> None:
    # 40 IHAVE frames of ids of nothing filled the wait list (seen-size, 20,000): an
    # honest IHAVE then found it full and the message it announced was never asked for.
    now = [0.0]
    wire = _Wire()
    router = Router("victim", wire, clock=lambda: now[0])
    router.subscribe("news")
    for peer in ("honest", "liar"):
        router.handle(peer, {"op": "subscribe", "topics": ["news"]})
    for frame in range(40):
        router.handle("liar", {"op": "ihave", "topic": "news",
                               "ids": [f"{frame:04d}{i:028x}" for i in range(500)]})
    for _ in range(4):  # three rounds of IWANT unanswered, then given up
        now[0] += 1.0
        router.heartbeat()
    assert router.counters["broken promises"] >= 20_000
    assert router.scores.graylisted("liar") and not router.scores.prunable("honest")
    # The liar fills the list again: dropped unread now, so an honest one is waited for.
    for frame in range(40):
        router.handle("liar", {"op": "ihave", "topic": "news",
                               "ids": [f"{frame:04d}{i:028x}" for i in range(500)]})
    router.handle("honest", {"op": "ihave", "topic": "news", "ids": ["a" * 32]})
    wire.sent.clear()
    now[0] += 1.0
    router.heartbeat()
    assert ("honest", {"op": "iwant", "ids": ["a" * 32]}) in wire.sent


def test_a_message_on_a_topic_not_subscribed_is_dropped_before_its_signature_is_checked(
        monkeypatch: Any) -> None:
    """A signature check costs far more than the frame: a peer pushing messages on topics
    this node does not take must not make it verify each one (nor be marked seen)."""
    checked: list[str] = []
    real = router_module.check_signature

    def counting(frame: dict[str, Any], digest: bytes, *, required: bool) -> None:
        checked.append(frame["topic"])
        real(frame, digest, required=required)

    monkeypatch.setattr(router_module, "check_signature", counting)
    router = Router("victim", _Wire())
    router.subscribe("news")
    origin = Identity.generate().peer_id
    forged = "A" * 88  # well-formed base64, no signature of the origin's
    for seq in range(100):
        frame = make_message("sport", origin, seq, {"n": seq})
        router.handle("pusher", {**frame, "sig": forged})
    assert checked == []
    assert router.counters["not subscribed"] == 100
    assert not router.seen
    # On a topic it takes, the signature is checked (and a forgery refused).
    router.handle("pusher", {**make_message("news", origin, 1, {}), "sig": forged})
    assert checked == ["news"]
    assert any(name.startswith("invalid") for name in router.counters)
