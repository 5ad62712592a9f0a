"""A node listening on more addresses than a peer takes (16): its hello and its signed
presence records carry the first 16, and its start says which are left out. A record
signed over all of them would be refused whole by every peer (malformed, or, where a
plugin sends the first 16, a bad signature), and the node never found."""

from __future__ import annotations

import logging

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import MAX_ADDRESSES, Identity

from .conftest import MsgpackCodec, TcpTransport, channel_of

LISTENERS = MAX_ADDRESSES + 4


def node_on(listen: list[str]) -> Node:
    return Node(Identity.generate(), transports={"tcp": TcpTransport()},
                codecs={"application/msgpack": MsgpackCodec()},
                options=NodeOptions(listen=listen))


async def test_a_node_on_twenty_addresses_announces_sixteen_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    server, client = node_on(["tcp://127.0.0.1:0"] * LISTENERS), node_on([])
    with caplog.at_level(logging.WARNING, logger="p2phost.node"):
        await server.start()
    try:
        await client.start()
        assert len(server.addresses) == LISTENERS
        [warning] = [r.getMessage() for r in caplog.records if "not announced" in r.getMessage()]
        assert warning.startswith(f"4 of this node's {LISTENERS} listen addresses are not "
                                  "announced to peers or by discovery")
        assert "(fix: listen on fewer addresses: [node] listen)" in warning
        # A discovery plugin signs what the node listens on: a record every peer accepts.
        record = server.sign_presence("lan", server.addresses, lifetime=5)
        assert record.check().addresses == tuple(server.addresses[:MAX_ADDRESSES])
        # The hello carries the same 16: the client takes it whole, leaving nothing out.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            await client.connect(server.addresses[-1])
        assert channel_of(client, server.peer_id).hello.listen == record.addresses
        assert not [r for r in caplog.records if "left out" in r.getMessage()]
    finally:
        await client.close()
        await server.close()
