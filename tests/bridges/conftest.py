"""In-process nodes for the bridge tests: a bridge node and a sink node over mem://."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import App, Handler, Identity, Message
from tests.discovery.plugins import use_plugin_source

for _name in ("memory-transport", "json-codec", "broker-bridge"):
    use_plugin_source(_name)

from p2phost_broker_bridge import BridgeApp, BridgeSettings  # noqa: E402
from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402

_names = itertools.count()


class Sink(App):
    """Records every message of its topics; acknowledged ones are at-least-once."""

    name = "sink"

    def __init__(self, topics: list[str], acknowledged: bool) -> None:
        self.topics, self.acknowledged = topics, acknowledged
        self.got: list[Message] = []

    def handlers(self) -> dict[str, Handler]:
        return {t: self._record for t in self.topics}

    def deliveries(self) -> dict[str, Any]:
        from p2phost_sdk import Delivery
        return {t: Delivery("at-least-once") for t in self.topics} if self.acknowledged else {}

    async def _record(self, message: Message) -> None:
        self.got.append(message)

    def bodies(self) -> list[Any]:
        return [m.body for m in self.got]


def node(apps: list[App], state: Path | None = None,
         identity: Identity | None = None) -> Node:
    """An in-process node over mem:// (not started)."""
    return Node(identity or Identity.generate(),
                transports={"mem": MemoryTransport(max_frame_size=1 << 20)},
                codecs={"application/json": JsonCodec()}, apps=apps,
                options=NodeOptions(listen=[f"mem://bridge-{next(_names)}-{time.time_ns()}"],
                                    state_dir=state, max_frame_size=1 << 20))


async def eventually(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class Pair:
    """A started bridge node and a sink node connected to it."""

    def __init__(self, bridge: Node, app: BridgeApp, sink: Node, sink_app: Sink,
                 state: Path) -> None:
        self.bridge, self.app, self.sink, self.sink_app = bridge, app, sink, sink_app
        self.state = state

    def dead_letters(self) -> list[tuple[str, str, bytes, str]]:
        """(peer, topic, body, reason) of the bridge node's dead letters."""
        with sqlite3.connect(self.state / "delivery.db") as db:
            return list(db.execute("SELECT peer, topic, body, reason FROM dead ORDER BY id"))


@pytest.fixture
async def bridge_pair(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await bridge_pair(config, sink_topics, acknowledged)``: a started pair."""
    started: list[Node] = []

    async def make(config: dict[str, Any], topics: list[str], acknowledged: bool) -> Pair:
        identity = Identity.generate()
        app = BridgeApp(BridgeSettings.from_config(config), peer_id=identity.peer_id)
        bridge = node([app], tmp_path, identity)
        sink_app = Sink(topics, acknowledged)
        sink = node([sink_app])
        for n in (bridge, sink):
            await n.start()
            started.append(n)
        await sink.connect(bridge.addresses[0])
        await eventually("the bridge to see the sink", lambda: any(
            set(topics) <= p.topics for p in bridge.peers()))
        return Pair(bridge, app, sink, sink_app, tmp_path)

    yield make
    for n in reversed(started):
        await n.close()
