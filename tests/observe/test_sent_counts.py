"""Every message a node sends counts as sent, and every one it takes in as received: one-way
messages, requests, replies (an error reply too), acknowledged messages. ``peers --stats``
(``Node.stats()``, what the control socket answers) and ``/metrics`` give the same figures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from p2phost._observability import MetricsSettings
from p2phost._runtime import Node
from p2phost_sdk import App, Delivery, Message, RemoteError, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture

from .test_metrics import scrape, total

NOTES, REQUESTS, FAILING, ACKED = 12, 9, 4, 5
ACKED_MODE = Delivery("at-least-once")


class Server(App):
    name = "server"

    @handler("work")
    async def work(self, message: Message) -> int:
        return int(message.body) * 2

    @handler("fail")
    async def fail(self, message: Message) -> None:
        raise ValueError("no")

    @handler("note")
    async def note(self, message: Message) -> None:
        return None

    @handler("kept", delivery=ACKED_MODE)
    async def kept(self, message: Message) -> None:
        return None


class Client(App):
    name = "client"
    delivery = {"kept": ACKED_MODE}


def _counts(node: Node) -> dict[str, dict[str, int]]:
    """sent and received per topic, as ``peers --stats --json`` shows them."""
    return {topic: {"sent": c["sent"], "received": c["received"]}
            for topic, c in node.stats()["topics"].items() if topic != "other"}


def _agree(node: Node, samples: dict[Any, float]) -> None:
    for topic, counters in _counts(node).items():
        for name, value in counters.items():
            assert total(samples, f"p2phost_messages_{name}_total", topic=topic) == value, \
                (topic, name)


async def test_replies_count_as_sent_and_the_metrics_agree(make_node: MakeNode) -> None:
    metrics = MetricsSettings(listen="127.0.0.1:0")
    server = await make_node([Server()], metrics=metrics)
    client = await make_node([Client()], metrics=metrics)
    peer = await client.connect(server.addresses[0])
    for i in range(NOTES):
        await client.send(peer, "note", i)
    for i in range(REQUESTS):
        assert await client.request(peer, "work", i) == 2 * i
    for _ in range(FAILING):
        with pytest.raises(RemoteError):
            await client.request(peer, "fail", None)
    for i in range(ACKED):
        await client.send(peer, "kept", i)
    await wait_until(lambda: server.delivery.stats.get("note", "handled") == NOTES
                     and server.delivery.stats.get("kept", "handled") == ACKED
                     and client.delivery.stats.get("kept", "acked") == ACKED, 10,
                     "every note and acknowledged message handled and acked")

    assert _counts(server) == {
        "note": {"sent": 0, "received": NOTES},
        "work": {"sent": REQUESTS, "received": REQUESTS},  # the replies
        "fail": {"sent": FAILING, "received": FAILING},  # the error replies
        "kept": {"sent": 0, "received": ACKED},
    }
    assert _counts(client) == {
        "note": {"sent": NOTES, "received": 0},
        "work": {"sent": REQUESTS, "received": REQUESTS},
        "fail": {"sent": FAILING, "received": FAILING},
        "kept": {"sent": ACKED, "received": 0},
    }
    by_peer = server.stats()["by_peer"][client.peer_id]["work"]
    assert by_peer["sent"] == REQUESTS and by_peer["bytes_sent"] > 0
    for node in (server, client):
        assert node.metrics is not None
        _agree(node, await asyncio.to_thread(scrape, node.metrics.address))
