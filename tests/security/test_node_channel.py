"""Nodes over real TCP with each security plugin: a replayed or altered frame on the wire
is refused (the message is handled once, the connection closed), and a node presenting
another node's peer id cannot complete the handshake."""

from __future__ import annotations

import logging

import pytest

from p2phost._runtime import Hello, Kind, decode
from p2phost_sdk import ConnectionClosed, Identity, PeerUnavailable, TransportError
from tests.plugins.security_support import mitm_process

from .conftest import SECURITY, TIMEOUT, Counter, MakeNode, TcpTransport, eventually


@pytest.mark.parametrize("attack", ["replay", "flip"])
async def test_a_frame_replayed_or_altered_on_the_wire_is_refused(
        make_node: MakeNode, security: str, attack: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "p2phost")
    app = Counter()
    server = await make_node(security, [app])
    client = await make_node(security, listen=False)
    with mitm_process(server.addresses[0], b"-") as relay:
        peer = await client.connect(relay.address)
        await client.send(peer, "note", "once")
        await eventually(lambda: app.notes == ["once"])
        if attack == "replay":
            assert relay.command("replay").startswith("replayed")
        else:
            assert relay.command("flip") == "armed"
            await client.send(peer, "note", "altered")
        await eventually(lambda: not server.peers(), TIMEOUT)
        await eventually(lambda: not client.peers(), TIMEOUT)
    assert app.notes == ["once"]
    assert f"disconnected from {client.peer_id}" in caplog.text


async def test_a_node_saying_hello_as_another_node_is_refused(
        make_node: MakeNode, security: str, caplog: pytest.LogCaptureFixture) -> None:
    victim, impostor = Identity.generate(), Identity.generate()
    server = await make_node(security, [Counter()])
    connection = await TcpTransport().dial(server.addresses[0], timeout=TIMEOUT)
    secured = await SECURITY[security]().secure(
        connection, identity=impostor, initiator=True, expected_peer_id=server.peer_id,
        timeout=TIMEOUT)
    await secured.send(Hello(peer_id=victim.peer_id, codecs=("application/json",),
                             session="s", nonce="n").to_frame())
    said = []
    try:
        while True:
            said.append(decode(await secured.recv()))
    except (ConnectionClosed, TransportError):
        pass
    goodbye = said[-1]
    assert goodbye.kind is Kind.GOODBYE
    assert goodbye.body.decode() == (f"hello claims peer id {victim.peer_id} but the channel "
                                     f"proved {impostor.peer_id}")
    assert "hello claims peer id" in caplog.text
    assert server.peers() == []


async def test_a_node_answering_for_another_peer_id_is_refused(
        make_node: MakeNode, security: str) -> None:
    victim = Identity.generate()
    impostor = await make_node(security, [Counter()])  # at the address found for the victim
    client = await make_node(security, listen=False)
    with pytest.raises(PeerUnavailable, match=f"handshake failed.*{victim.peer_id}"):
        await client.connect(impostor.addresses[0], expected_peer_id=victim.peer_id)
    assert client.peers() == [] and impostor.peers() == []
    # The same address, dialled without a claim to check, is the impostor, proven as itself.
    assert await client.connect(impostor.addresses[0]) == impostor.peer_id
