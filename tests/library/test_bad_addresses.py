"""A malformed address given to the library is named as malformed, with the form to write,
whichever call receives it: never "peer ... is not connected" (which sends a user looking
for a connection problem)."""

from __future__ import annotations

import pytest

import p2phost
from tests.library.conftest import StateDir, manifest, mem_address

#: A malformed address, and the URL the fix must propose.
BAD = [("127.0.0.1:7400", "tcp://127.0.0.1:7400"),        # no scheme
       ("tcp:/127.0.0.1:7400", "tcp://127.0.0.1:7400"),   # a slash short
       ("tcp://127.0.0.1", "tcp://HOST:PORT")]            # no port: tcp's check_address


@pytest.mark.parametrize(("address", "form"), BAD)
async def test_send_and_request_name_a_malformed_address(
        state_dir: StateDir, address: str, form: str) -> None:
    plugins = ("memory-transport", "tcp-transport", "json-codec")
    async with p2phost.open_node(manifest=manifest(plugins=plugins),
                                 state_dir=state_dir("client")) as node:
        for call in (node.connect(address), node.send(address, "echo", {}),
                     node.request(address, "echo", {}, timeout=2)):
            with pytest.raises(p2phost.UserError) as caught:
                await call
            assert repr(address) in caught.value.message, caught.value.message
            assert "not connected" not in caught.value.message
            assert form in (caught.value.fix or ""), caught.value.fix


def test_the_blocking_api_names_a_malformed_address(state_dir: StateDir) -> None:
    with p2phost.connect(manifest=manifest(), state_dir=state_dir("client")) as node, \
            pytest.raises(p2phost.UserError, match=r"bad address '127\.0\.0\.1:9': the address "
                          r"is malformed: `scheme://` expected"):
        node.send("127.0.0.1:9", "echo", {})


async def test_an_empty_topic_is_refused_here_with_a_fix(state_dir: StateDir) -> None:
    server = p2phost.open_node(manifest=manifest([mem_address()], name="server"),
                               state_dir=state_dir("server"))

    @server.handler("echo")
    async def echo(message: p2phost.Message) -> object:
        return message.body

    async with server, p2phost.open_node(manifest=manifest(name="client"),
                                         state_dir=state_dir("client")) as client:
        address = server.addresses[0]
        for call in (client.request(address, "", 1, timeout=2), client.send(address, " ", 1),
                     client.publish("", 1)):
            # Refused before it goes out: a RemoteError from the peer would carry no fix.
            with pytest.raises(p2phost.LibraryError) as caught:
                await call
            assert "topic" in caught.value.message and "empty" in caught.value.message
            assert "echo" in (caught.value.fix or ""), caught.value.fix
