"""Attacks on a plain request as its own mailbox item (``_received.Asked``).

What the ``Work`` path did for a request must still hold on the ``Asked`` path:
cancellations, a node closing, the counters of each outcome, a message an app keeps,
the metrics' and tracing's switch, per-peer order, context variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import dataclasses
import gc
import logging
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2phost._runtime import Node, NodeOptions
from p2phost._runtime.wire._channel import Channel
from p2phost_sdk import App, Identity, Message, MessageKind, RemoteError, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import MsgpackCodec, TcpTransport, tcp_pair

for _name in ("tcp-transport", "msgpack-codec"):
    use_plugin_source(_name)

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("attack", default="clean")


class Target(App):
    """Request handlers for each attack."""

    name = "target"

    def __init__(self) -> None:
        self.kept: list[Message] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.order: list[Any] = []
        self.seen_var: list[str] = []
        self.other: asyncio.Future[None] | None = None

    @handler("cancel-self")
    async def cancel_self(self, message: Message) -> Any:
        raise asyncio.CancelledError("raised by the handler itself")

    @handler("cancelled-future")
    async def cancelled_future(self, message: Message) -> Any:
        self.other = asyncio.get_running_loop().create_future()
        self.started.set()
        await self.other  # someone else cancels it
        return "not reached"

    @handler("hang")
    async def hang(self, message: Message) -> Any:
        self.kept.append(message)
        self.started.set()
        await asyncio.Event().wait()  # until the node closes

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        self.order.append(message.body)
        return message.body

    @handler("gate")
    async def gate(self, message: Message) -> Any:
        self.order.append(message.body)
        self.started.set()
        await self.release.wait()
        return message.body

    @handler("set-var")
    async def set_var(self, message: Message) -> Any:
        self.seen_var.append(VAR.get())
        VAR.set("dirty")
        return "set"

    @handler("read-var")
    async def read_var(self, message: Message) -> Any:
        self.seen_var.append(VAR.get())
        return VAR.get()

    @handler("look")
    async def look(self, message: Message) -> Any:
        self.kept.append(message)
        copied = copy.copy(message)
        deep = copy.deepcopy(message)
        pickled = pickle.loads(pickle.dumps(message))
        replaced = dataclasses.replace(message, body="changed")
        return {
            "id": message.id,
            "kind": message.kind.value,
            "repr": repr(message),
            "copy": repr(copied),
            "copy_eq": copied == Message(**{f.name: getattr(message, f.name)
                                            for f in dataclasses.fields(Message)}),
            "deep_type": type(deep).__name__,
            "pickled_type": type(pickled).__name__,
            "pickled_eq": pickled == copied,
            "replaced": repr(replaced),
            "replaced_eq_self": dataclasses.replace(message) == message,
            "hash_equal": hash(dataclasses.replace(message, body=1))
            == hash(dataclasses.replace(message, body=1)),
            "isinstance": isinstance(message, Message),
        }

    async def on_peer_connected(self, peer: Any) -> None:
        self.order.append("connected")


@contextlib.asynccontextmanager
async def pair(app: App, **options: Any) -> AsyncIterator[tuple[Node, Node]]:
    """tcp_pair's nodes, with the server's ``options``."""
    made: list[Node] = []
    try:
        for apps, listen, more in (([app], ["tcp://127.0.0.1:0"], options), ([], [], {})):
            node = Node(Identity.generate(), transports={"tcp": TcpTransport()},
                        codecs={"application/msgpack": MsgpackCodec()}, apps=apps,
                        options=NodeOptions(listen=listen, **more))
            made.append(node)
            await node.start()
        server, client = made
        await client.connect(server.addresses[0])
        yield server, client
    finally:
        for node in reversed(made):
            await node.close()


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node, Target]]:
    app = Target()
    async with tcp_pair(app) as (server, client):
        yield server, client, app


def counts(node: Node, topic: str) -> tuple[int, ...]:
    stats = node.delivery.stats
    return tuple(stats.get(topic, name)
                 for name in ("received", "handled", "failed", "sent", "dropped"))


async def test_a_handler_raising_cancelled_error_itself_answers_with_an_error(
    nodes: tuple[Node, Node, Target], caplog: pytest.LogCaptureFixture,
) -> None:
    server, client, _ = nodes
    with caplog.at_level(logging.ERROR, logger="p2phost"):
        for _ in range(3):
            with pytest.raises(RemoteError, match="CancelledError"):
                await client.request(server.peer_id, "cancel-self", None, timeout=10)
        assert await client.request(server.peer_id, "echo", 1, timeout=10) == 1
    assert counts(server, "cancel-self") == (3, 0, 3, 3, 0)
    assert counts(server, "echo") == (1, 1, 0, 1, 0)
    assert "processing a message from" not in caplog.text


async def test_a_future_someone_else_cancels_answers_with_an_error(
    nodes: tuple[Node, Node, Target], caplog: pytest.LogCaptureFixture,
) -> None:
    server, client, app = nodes
    with caplog.at_level(logging.ERROR, logger="p2phost"):
        asking = asyncio.ensure_future(
            client.request(server.peer_id, "cancelled-future", None, timeout=10))
        await asyncio.wait_for(app.started.wait(), 10)
        assert app.other is not None
        app.other.cancel()
        with pytest.raises(RemoteError, match="CancelledError"):
            await asking
        assert await client.request(server.peer_id, "echo", 2, timeout=10) == 2
    assert counts(server, "cancelled-future") == (1, 0, 1, 1, 0)
    assert "processing a message from" not in caplog.text


async def test_a_node_closing_under_a_running_and_a_queued_request_leaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Target()
    with caplog.at_level(logging.DEBUG, logger="p2phost"):
        async with pair(app, drain_timeout=0.5) as (server, client):
            running = asyncio.ensure_future(
                client.request(server.peer_id, "hang", "running", timeout=30))
            await asyncio.wait_for(app.started.wait(), 10)
            queued = asyncio.ensure_future(
                client.request(server.peer_id, "echo", "queued", timeout=30))
            await wait_until(lambda: server.delivery.stats.get("echo", "received") == 1,
                             10, "the second request queued")
            await server.close()
            done, _ = await asyncio.wait([running, queued], timeout=20)
            assert len(done) == 2
            for request in (running, queued):
                assert request.exception() is not None  # lost, never answered
    assert "processing a message from" not in caplog.text
    assert "Traceback" not in caplog.text or "CancelledError" not in caplog.text
    gc.collect()
    (kept,) = app.kept
    held = [o for o in gc.get_referents(kept) if isinstance(o, Channel)]
    assert held == [], "a cancelled request's message a handler kept holds its channel"


async def test_a_message_a_handler_keeps_behaves_as_a_message(
    nodes: tuple[Node, Node, Target],
) -> None:
    server, client, app = nodes
    seen = await client.request(server.peer_id, "look", [1, "a"], timeout=10)
    (message,) = app.kept
    assert seen["repr"].startswith("Message(id=")
    assert seen["repr"] == seen["copy"]
    assert seen["copy_eq"] and seen["pickled_eq"] and seen["replaced_eq_self"]
    assert seen["deep_type"] == seen["pickled_type"] == "Message"
    assert seen["isinstance"]
    assert "body='changed'" in seen["replaced"]
    assert seen["kind"] == "request" and message.kind is MessageKind.REQUEST
    assert len(seen["id"]) == 16 and message.id == seen["id"]
    # Kept after its answer: still a Message, holding nothing of the node's.
    assert repr(message) == seen["repr"]
    assert pickle.loads(pickle.dumps(message)) == copy.copy(message)


async def test_context_variables_never_reach_the_next_request(
    nodes: tuple[Node, Node, Target],
) -> None:
    server, client, app = nodes
    asks = []
    for n in range(10):
        topic = "set-var" if n % 2 == 0 else "read-var"
        asks.append(asyncio.ensure_future(
            client.request(server.peer_id, topic, n, timeout=10)))
    await asyncio.gather(*asks)
    assert app.seen_var == ["clean"] * 10


async def test_many_requests_in_flight_from_one_peer_keep_their_order(
    nodes: tuple[Node, Node, Target],
) -> None:
    server, client, app = nodes
    first = asyncio.ensure_future(client.request(server.peer_id, "gate", -1, timeout=30))
    await asyncio.wait_for(app.started.wait(), 10)
    asks = [asyncio.ensure_future(client.request(server.peer_id, "echo", n, timeout=30))
            for n in range(200)]
    await wait_until(lambda: server.delivery.stats.get("echo", "received") == 200, 10,
                     "all queued")
    app.release.set()
    assert await first == -1
    assert await asyncio.gather(*asks) == list(range(200))
    assert app.order == ["connected", -1, *range(200)]
    assert counts(server, "echo") == (200, 200, 0, 200, 0)


async def test_a_late_handler_takes_plain_requests(
    nodes: tuple[Node, Node, Target],
) -> None:
    server, client, app = nodes

    async def late(message: Message) -> Any:
        return ("late", message.body)

    server.add_handler(app, "late", late)
    # The client learns the topic from a new hello: reconnect.
    assert await client.request(server.peer_id, "late", 5, timeout=10) == ["late", 5]
    assert counts(server, "late") == (1, 1, 0, 1, 0)


async def test_each_outcome_is_counted_as_the_work_path_counted_it(
    nodes: tuple[Node, Node, Target],
) -> None:
    server, client, app = nodes
    assert await client.request(server.peer_id, "echo", 1, timeout=10) == 1
    with pytest.raises(RemoteError):
        await client.request(server.peer_id, "cancel-self", None, timeout=10)
    # Expired behind a slow one.
    gated = asyncio.ensure_future(client.request(server.peer_id, "gate", 0, timeout=10))
    await asyncio.wait_for(app.started.wait(), 10)
    with pytest.raises(Exception):
        await client.request(server.peer_id, "read-var", None, timeout=0.2)
    app.release.set()
    assert await gated == 0
    await wait_until(lambda: counts(server, "read-var")[4] == 1, 10, "dropped")
    assert counts(server, "echo") == (1, 1, 0, 1, 0)
    assert counts(server, "cancel-self") == (1, 0, 1, 1, 0)
    assert counts(server, "gate") == (1, 1, 0, 1, 0)
    assert counts(server, "read-var") == (1, 0, 0, 0, 1)
    assert server.delivery.stats.drop_reasons == {"request expired before its handler": 1}


async def test_a_request_whose_peer_is_lost_while_it_runs_is_counted_handled_not_sent(
) -> None:
    app = Target()
    async with pair(app) as (server, client):
        asking = asyncio.ensure_future(client.request(server.peer_id, "gate", 7, timeout=30))
        await asyncio.wait_for(app.started.wait(), 10)
        await client.close()
        with pytest.raises(Exception):
            await asking
        await wait_until(lambda: not server.peers(), 10, "the client gone")
        app.release.set()
        await wait_until(lambda: counts(server, "gate")[1] == 1, 10, "handled")
        assert counts(server, "gate") == (1, 1, 0, 0, 0)
        assert server._dispatch.mailboxes()["target"]["queued"] == 0
