"""Nodes for runtime tests: in-process over tcp or memory, and ``p2phost run`` processes."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost._runtime.wire._channel import Channel
from p2phost_sdk import App, Codec, Identity, Security
from tests.conftest import build_wheels
from tests.discovery.plugins import use_plugin_source

for _name in ("tcp-transport", "memory-transport", "json-codec", "msgpack-codec", "echo"):
    use_plugin_source(_name)
RECORDER = Path(__file__).resolve().parent / "plugins" / "recorder"
if str(RECORDER) not in sys.path:
    sys.path.insert(0, str(RECORDER))

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_msgpack_codec import MsgpackCodec  # noqa: E402
from p2phost_tcp_transport import TcpTransport  # noqa: E402

_names = itertools.count()
MakeNode = Callable[..., Awaitable[Node]]
CODECS: dict[str, Callable[[], Codec]] = {
    "application/json": JsonCodec, "application/msgpack": MsgpackCodec,
}


def fresh_address(kind: str) -> str:
    """A new listen address of the transport ``kind``."""
    return "tcp://127.0.0.1:0" if kind == "tcp" else f"mem://node-{next(_names)}"


def build_node(kind: str, apps: Sequence[App] = (), *, listen: Sequence[str] | None = None,
               codecs: Sequence[str] = ("application/json",), identity: Identity | None = None,
               max_frame_size: int = 1 << 20, capacity: int = 1024, buffer_size: int = 0,
               tcp: TcpTransport | None = None, **options: Any) -> Node:
    """An in-process node over ``kind`` ("tcp" or "mem"), not started (``tcp``: its tcp
    transport, if not the default one)."""
    transports = {"tcp": tcp or TcpTransport(max_frame_size=max_frame_size,
                                             buffer_size=buffer_size, read_size=65536),
                  "mem": MemoryTransport(max_frame_size=max_frame_size, capacity=capacity)}
    return Node(
        identity or Identity.generate(), transports=transports,
        codecs={c: CODECS[c]() for c in codecs}, apps=apps,
        options=NodeOptions(listen=[fresh_address(kind)] if listen is None else listen,
                            max_frame_size=max_frame_size, **options),
    )


@contextlib.asynccontextmanager
async def tcp_pair(app: App, security: Sequence[Security] = (), *,
                   options: dict[str, Any] | None = None,
                   **transport: Any) -> AsyncIterator[tuple[Node, Node]]:
    """A server running ``app`` over tcp with msgpack, and a client connected to it
    (both with ``security``; ``options``: the server's other NodeOptions; ``transport``:
    tcp-transport's options)."""
    made: list[Node] = []
    try:
        for apps, listen, more in (([app], ["tcp://127.0.0.1:0"], options or {}),
                                   ([], [], {})):
            node = Node(Identity.generate(), transports={"tcp": TcpTransport(**transport)},
                        codecs={"application/msgpack": MsgpackCodec()},
                        security=list(security), apps=apps,
                        options=NodeOptions(listen=listen, **more))
            made.append(node)
            await node.start()
        server, client = made
        await client.connect(server.addresses[0])
        yield server, client
    finally:
        for node in reversed(made):
            await node.close()


def channel_of(node: Node, peer_id: str) -> Channel:
    """``node``'s one open channel to ``peer_id``."""
    peer = node._table.get(peer_id)
    assert peer is not None
    (channel,) = [c for c in peer.channels if not c.ended]
    return channel


@pytest.fixture(params=["tcp", "mem"])
def kind(request: pytest.FixtureRequest) -> str:
    """The transport the test runs over."""
    return str(request.param)


@pytest.fixture
async def make_node(kind: str) -> AsyncIterator[MakeNode]:
    """``await make_node(apps, **options)``: a started node, closed after the test."""
    made: list[Node] = []

    async def make(apps: Sequence[App] = (), **kwargs: Any) -> Node:
        node = build_node(kind, apps, **kwargs)
        await node.start()
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        await node.close()


@pytest.fixture(scope="session")
def recorder_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorder test app, built once."""
    return build_wheels([RECORDER], tmp_path_factory.mktemp("recorder-wheel"))["recorder"]
