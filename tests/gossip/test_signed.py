"""Gossip messages signed by their origin, in real nodes: a forwarder cannot forge a
message under another origin's name nor alter one; what it tries is refused, counted and
scored down, and honest messages still arrive."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import Identity, plugin_payload
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source

for _name in ("gossip", "memory-transport", "json-codec", "noise-security"):
    use_plugin_source(_name)

from p2phost_gossip import (  # noqa: E402
    SIGNING_NAME,
    GossipApp,
    GossipMessage,
    gossip_of,
    make_message,
)
from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402

FAST = {"heartbeat": 0.1, "graft-timeout": 0.05, "d": 3, "d-low": 2, "d-high": 4,
        "topics": ["news"]}


def signer(identity: Identity) -> Any:
    return lambda digest: identity.sign(plugin_payload(SIGNING_NAME, digest))


@asynccontextmanager
async def signed_network(count: int) -> AsyncIterator[list[Node]]:
    """``count`` nodes with noise, each connected to every other, gossip signing."""
    memory, nodes = MemoryTransport(), []
    try:
        for number in range(count):
            identity = Identity.generate()
            app = GossipApp(FAST, peer_id=identity.peer_id, sign=signer(identity))
            node = Node(identity, transports={"mem": memory},
                        codecs={"application/json": JsonCodec()}, security=[NoiseSecurity()],
                        apps=[app], options=NodeOptions(
                            name=f"g{number}", listen=[f"mem://signed-{identity.peer_id}"],
                            drain_timeout=2.0))
            await asyncio.wait_for(node.start(), 10)
            for other in nodes:
                await asyncio.wait_for(node.connect(other.addresses[0]), 10)
            nodes.append(node)
        yield nodes
    finally:
        await asyncio.gather(*(asyncio.wait_for(n.close(), 15) for n in nodes),
                             return_exceptions=True)


async def test_signed_messages_reach_everyone_and_forgeries_are_refused() -> None:
    async with signed_network(4) as nodes:
        origin, forger, victim, bystander = nodes
        got: dict[str, list[GossipMessage]] = {n.peer_id: [] for n in nodes}
        for node in nodes:
            gossip_of(node.peer_id).subscribe("news", got[node.peer_id].append)
        await wait_until(lambda: all(len(gossip_of(n.peer_id).router.mesh["news"]) >= 2
                                     for n in nodes), 10, "meshes grafted")
        message_id = gossip_of(origin.peer_id).publish("news", {"text": "genuine"})
        await wait_until(lambda: all(any(m.id == message_id for m in got[n.peer_id])
                                     for n in nodes[1:]), 10, "the genuine message")

        # The forger sends the victim messages in the origin's name: unsigned, signed by
        # the forger's own key, and the genuine signature on altered data.
        genuine = gossip_of(origin.peer_id).router.cache.get(message_id)
        assert genuine is not None and "sig" in genuine
        unsigned = make_message("news", origin.peer_id, 1, {"text": "forged"})
        own_key = make_message("news", origin.peer_id, 2, {"text": "forged"},
                               sign=signer(forger.identity))
        altered = make_message("news", origin.peer_id, genuine["seq"], {"text": "altered"})
        altered["sig"] = genuine["sig"]
        garbage = make_message("news", origin.peer_id, 3, "x")
        garbage["sig"] = base64.b64encode(b"\0" * 64).decode()
        for frame in (unsigned, own_key, altered, garbage):
            await forger.send(victim.peer_id, "gossip", frame)
        app = gossip_of(victim.peer_id)
        await wait_until(lambda: app.counters().get("invalid", 0) == 4, 10, "forgeries refused")
        counters = app.counters()
        assert counters["invalid: not signed by its origin"] == 1
        assert counters["invalid: bad origin signature"] == 3
        assert app.router.scores.score(forger.peer_id) < 0
        assert [m.data for m in got[victim.peer_id]] == [{"text": "genuine"}]

        # A flood of forgeries graylists the forger: the rest is dropped unread, counted.
        for seq in range(10, 40):
            await forger.send(victim.peer_id, "gossip", make_message(
                "news", origin.peer_id, seq, {"text": "flood"}, sign=signer(forger.identity)))
        await wait_until(lambda: app.counters().get("invalid", 0)
                         + app.counters().get("graylisted", 0) == 34, 10, "the flood handled")
        # Graylisted after 9 (what followed was dropped unread); the score decays
        # back on the 0.1 s heartbeats, so the state itself is not asserted.
        assert app.counters().get("graylisted", 0) >= 1
        assert forger.peer_id not in app.router.mesh["news"]

        # Honest traffic still flows.
        later = gossip_of(bystander.peer_id).publish("news", {"text": "later"})
        await wait_until(lambda: any(m.id == later for m in got[victim.peer_id]), 10,
                         "an honest message after the attack")


def test_the_host_lends_each_plugin_the_node_key_under_its_own_name(tmp_path: Any) -> None:
    from p2phost_gossip import p2phost_apps

    from p2phost._plugins import _signer
    from p2phost_sdk import PluginContext, verify

    identity = Identity.generate()
    sign = _signer(identity, SIGNING_NAME)
    signature = sign(b"digest")
    assert verify(identity.peer_id, signature, plugin_payload(SIGNING_NAME, b"digest"))
    assert not verify(identity.peer_id, signature, plugin_payload("other", b"digest"))
    assert not verify(identity.peer_id, signature, b"digest")  # never a bare signature
    [app] = p2phost_apps(PluginContext(name="gossip", config={}, peer_id=identity.peer_id,
                                       state_dir=tmp_path, sign=sign))
    assert isinstance(app, GossipApp)
    frame = make_message("news", identity.peer_id, 1, "x", sign=app.router.sign)
    assert "sig" in frame
