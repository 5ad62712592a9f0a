"""The gossip app in real nodes: frames on the ``gossip`` topic, the API apps publish through."""

from __future__ import annotations

import pytest

from p2phost_sdk import ConfigError, Identity, PeerUnavailable, PluginContext
from p2phost_sdk.testing.app import AppConformance, NetworkFactory, app_network
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source

use_plugin_source("gossip")

from p2phost_gossip import GossipApp, GossipMessage, gossip_of, p2phost_apps  # noqa: E402

__all__ = ["app_network"]  # the kit's fixture

# Apps the kit makes have no node key yet: unsigned here, signed in test_signed.py.
FAST = {"heartbeat": 0.1, "graft-timeout": 0.05, "d": 3, "d-low": 2, "d-high": 4,
        "require-signatures": False}


class TestGossip(AppConformance):
    samples = {"gossip": [{"op": "subscribe", "topics": ["t"]}, {"op": "iwant", "ids": []}]}

    @pytest.fixture
    def app_factory(self) -> object:
        return lambda: GossipApp(FAST)


async def test_an_app_publishes_and_every_subscriber_gets_it_once(
    app_network: NetworkFactory,
) -> None:
    network = await app_network(6, lambda: GossipApp(FAST))
    publisher, *others = list(network)
    got: dict[str, list[GossipMessage]] = {n.peer_id: [] for n in others}
    for node in others:
        gossip_of(node.peer_id).subscribe("news", got[node.peer_id].append)
    routers = [gossip_of(n.peer_id).router for n in others]
    await wait_until(lambda: all(len(r.mesh["news"]) >= 2 for r in routers), 10,
                     "meshes grafted")
    sender = gossip_of(publisher.peer_id)
    ids = [sender.publish("news", {"n": i}) for i in range(20)]
    await wait_until(lambda: all(len(v) == 20 for v in got.values()), 10, "all delivered")
    for messages in got.values():
        assert [m.id for m in messages] == ids  # once each, in order here
        assert all(m.origin == publisher.peer_id for m in messages)
    assert sender.counters()["published"] == 20
    assert "news" in sender.router.fanout  # the publisher is not subscribed: fan-out


async def test_an_invalid_flood_through_a_real_node_is_refused_and_counted(
    app_network: NetworkFactory,
) -> None:
    network = await app_network(2, lambda: GossipApp(FAST | {"topics": ["news"]}))
    attacker, victim = list(network)
    for i in range(30):
        await attacker.send(victim.peer_id, "gossip", {
            "op": "msg", "topic": "news", "origin": attacker.peer_id, "seq": i,
            "data": i, "id": "0" * 32})
    app = gossip_of(victim.peer_id)
    await wait_until(lambda: app.counters().get("invalid", 0)
                     + app.counters().get("graylisted", 0) == 30, 10, "flood handled")
    assert app.counters().get("delivered", 0) == 0
    # Graylisted after 9 (what followed was dropped unread); the score decays back
    # on the 0.1 s heartbeats, so the state itself is not asserted.
    assert app.counters().get("graylisted", 0) >= 1
    assert attacker.peer_id not in app.router.mesh["news"]


def test_the_plugin_refuses_bad_config_naming_the_field(tmp_path: object) -> None:
    def context(config: dict[str, object]) -> PluginContext:
        return PluginContext(name="gossip", config=config, peer_id=Identity.generate().peer_id,
                             state_dir=tmp_path)  # type: ignore[arg-type]
    [app] = p2phost_apps(context({"topics": ["news"], "d": 10}))
    assert isinstance(app, GossipApp) and app.settings.d == 10
    with pytest.raises(ConfigError, match=r"d-high|d"):
        p2phost_apps(context({"d": 20}))
    with pytest.raises(ConfigError, match="heartbeat"):
        p2phost_apps(context({"heartbeat": 0}))
    with pytest.raises(PeerUnavailable, match="fix:"):
        gossip_of("nobody")
    # Another app may subscribe and publish before the host started gossip.
    [early] = p2phost_apps(context({}))
    assert isinstance(early, GossipApp)
    gossip = gossip_of(early.router.peer_id)
    assert gossip is early
    gossip.subscribe("news")
    assert gossip.publish("news", 1) and early.counters()["published"] == 1
