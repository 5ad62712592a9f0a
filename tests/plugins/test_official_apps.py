"""echo and chat pass the SDK's app kit; chat prints what it gets; static discovery dials."""

from __future__ import annotations

import io

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import ConfigError, Identity, PluginContext, RemoteError
from p2phost_sdk.testing.app import AppConformance, NetworkFactory, app_network
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source

for _name in ("echo", "chat", "static-discovery", "json-codec", "memory-transport"):
    use_plugin_source(_name)

from p2phost_chat import ChatApp  # noqa: E402
from p2phost_echo import EchoApp  # noqa: E402
from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_static_discovery import StaticDiscovery, p2phost_discovery  # noqa: E402

__all__ = ["app_network"]  # the kit's fixture, used by the tests below


class TestEcho(AppConformance):
    samples = {"echo": [{"text": "hi"}, [1, 2, 3], None]}

    @pytest.fixture
    def app_factory(self) -> type[EchoApp]:
        return EchoApp


class TestChat(AppConformance):
    samples = {"chat": [{"text": "hi"}, {"text": "hello", "from": "bob"}]}

    @pytest.fixture
    def app_factory(self) -> object:
        return lambda: ChatApp(out=io.StringIO())


async def test_echo_answers_with_the_body(app_network: NetworkFactory) -> None:
    a, b = await app_network(2, EchoApp)
    assert await a.request(b.peer_id, "echo", {"x": [1, "two"]}) == {"x": [1, "two"]}


async def test_chat_prints_messages_and_refuses_bodies_without_text(
    app_network: NetworkFactory,
) -> None:
    out = io.StringIO()
    network = await app_network(2, lambda: ChatApp(out=out))
    a, b = network
    await a.send(b.peer_id, "chat", {"text": "hi\nthere"})
    assert await a.request(b.peer_id, "chat", {"text": "again", "from": "alice"}) == {"ok": True}
    await wait_until(lambda: out.getvalue().count("\n") == 2, 5, "two lines printed")
    assert out.getvalue() == f"[chat] {a.peer_id[:12]}: hi there\n[chat] alice: again\n"
    with pytest.raises(RemoteError, match="a chat message is an object"):
        await a.request(b.peer_id, "chat", "just text")


def test_static_discovery_refuses_what_is_not_an_address(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="peers"):
        StaticDiscovery(["localhost:7400"])
    context = PluginContext(name="static-discovery", config={"peers": ["tcp://a:1"]},
                            peer_id=Identity.generate().peer_id, state_dir=tmp_path)  # type: ignore[arg-type]
    [discovery] = p2phost_discovery(context)
    assert isinstance(discovery, StaticDiscovery) and discovery.peers == ("tcp://a:1",)


async def test_static_discovery_makes_the_node_dial_and_stay_connected() -> None:
    transport = MemoryTransport()
    codecs = {"application/json": JsonCodec()}
    target = Node(Identity.generate(), transports={"mem": transport}, codecs=codecs,
                  apps=[EchoApp()], options=NodeOptions(listen=["mem://static-target"]))
    dialler = Node(Identity.generate(), transports={"mem": transport}, codecs=codecs,
                   discovery=[StaticDiscovery(["mem://static-target"])])
    async with target, dialler:
        await wait_until(lambda: len(dialler.peers()) == 1, 5, "dialled the listed peer")
        assert dialler.peers()[0].peer_id == target.peer_id
        assert await dialler.request(target.peer_id, "echo", 1) == 1
