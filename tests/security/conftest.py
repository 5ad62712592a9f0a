"""Nodes for the security tests: in-process over real TCP, each security plugin or none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import App, Identity, Message, Security, handler
from tests.discovery.plugins import use_plugin_source

for _name in ("tcp-transport", "json-codec", "noise-security", "tls-security"):
    use_plugin_source(_name)

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402
from p2phost_tls_security import TlsSecurity  # noqa: E402

SECURITY: dict[str, Callable[[], Security]] = {"noise": NoiseSecurity, "tls": TlsSecurity}
#: Seconds any network wait of these tests may take.
TIMEOUT = 10.0


class Counter(App):
    """Counts the notes it gets and echoes requests."""

    name = "counter"

    def __init__(self) -> None:
        self.notes: list[Any] = []

    @handler("note")
    async def note(self, message: Message) -> None:
        self.notes.append(message.body)

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        return message.body


def tcp_node(security: str | None, apps: Sequence[App] = (), *,
             identity: Identity | None = None, listen: bool = True,
             admit: Callable[[str, str | None], str | None] | None = None,
             **options: Any) -> Node:
    """An in-process node over TCP on loopback with the named security plugin (or none)."""
    return Node(
        identity or Identity.generate(), transports={"tcp": TcpTransport()},
        codecs={"application/json": JsonCodec()},
        security=[SECURITY[security]()] if security else [], apps=apps,
        options=NodeOptions(listen=["tcp://127.0.0.1:0"] if listen else [],
                            **{"handshake_timeout": 2.0, **options}),
        admit=admit,
    )


MakeNode = Callable[..., Awaitable[Node]]


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not true after {timeout}s: {condition}")


@pytest.fixture(params=list(SECURITY))
def security(request: pytest.FixtureRequest) -> str:
    """The security plugin under test."""
    return str(request.param)


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    """``await make_node(security, apps, **kwargs)``: a started node, closed after."""
    made: list[Node] = []

    async def make(security: str | None, apps: Sequence[App] = (), **kwargs: Any) -> Node:
        node = tcp_node(security, apps, **kwargs)
        await node.start()
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        await node.close()
