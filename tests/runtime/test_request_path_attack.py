"""Attacks on a plain request as its own mailbox item (``_received.Asked``).

What the ``Work`` path did for a request must still hold on the ``Asked`` path:
cancellations, a node closing, the counters of each outcome, a message an app keeps,
the metrics' and tracing's switch, per-peer order, context variables, a full outbox.

* A request whose handler's task is cancelled (the node closing, or the app cancelling
  it) is never answered: a message its handler keeps must not hold its channel then
  either (it did: only an answer cleared ``Asked._channel``).
* A handler that raises ``CancelledError`` as it is called fails its request on the
  ``Work`` path too (a traced request): it ended the mailbox's task, unanswered.
* A handler that is a plain function returning None runs once on the ``Work`` path too
  (``Dispatcher.start``'s None read as "not started": ``_process`` called it again).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import gc
import logging
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from p2phost._observability import MetricsSettings
from p2phost._runtime import Node
from p2phost._runtime.wire._channel import Channel
from p2phost_sdk import (
    App,
    Message,
    MessageKind,
    PeerUnavailable,
    RemoteError,
    RequestTimeout,
    handler,
)
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.observe.test_traces import otel_env, spans
from tests.runtime.conftest import MakeNode, channel_of, tcp_pair
from tests.runtime.conftest import make_node as make_node  # the fixture

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


def cancel_at_once(message: Message) -> Any:  # not an async def
    raise asyncio.CancelledError("raised before any await")


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
    server, client, app = nodes
    with caplog.at_level(logging.ERROR, logger="p2phost"):
        for _ in range(3):
            with pytest.raises(RemoteError, match="CancelledError"):
                await client.request(server.peer_id, "cancel-self", None, timeout=10)
        assert await client.request(server.peer_id, "echo", 1, timeout=10) == 1
        # Raised at once, by a handler that is not an async def.
        server.add_handler(app, "cancel-at-once", cancel_at_once)
        with pytest.raises(RemoteError, match="CancelledError"):
            await client.request(server.peer_id, "cancel-at-once", None, timeout=10)
        assert await client.request(server.peer_id, "echo", 2, timeout=10) == 2
    assert counts(server, "cancel-self") == (3, 0, 3, 3, 0)
    assert counts(server, "cancel-at-once") == (1, 0, 1, 1, 0)
    assert counts(server, "echo") == (2, 2, 0, 2, 0)
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
        async with tcp_pair(app, options={"drain_timeout": 0.5}) as (server, client):
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
    # Nothing logged as a bug, no reply tried on the closed channel.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "processing a message from" not in caplog.text
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


async def queued_behind_a_gate(server: Node, client: Node, app: Target, count: int
                               ) -> tuple[asyncio.Task[Any], list[asyncio.Task[Any]]]:
    """A "gate" request running (until ``app.release``) and ``count`` "echo" requests
    queued behind it in the server's mailbox, from one peer."""
    first = asyncio.ensure_future(client.request(server.peer_id, "gate", -1, timeout=30))
    await asyncio.wait_for(app.started.wait(), 10)
    asks = [asyncio.ensure_future(client.request(server.peer_id, "echo", n, timeout=30))
            for n in range(count)]
    await wait_until(lambda: server.delivery.stats.get("echo", "received") == count, 10,
                     "all queued")
    return first, asks


async def test_many_requests_in_flight_from_one_peer_keep_their_order(
    nodes: tuple[Node, Node, Target],
) -> None:
    server, client, app = nodes
    first, asks = await queued_behind_a_gate(server, client, app, 200)
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
    with pytest.raises(RequestTimeout):
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
    async with tcp_pair(app) as (server, client):
        asking = asyncio.ensure_future(client.request(server.peer_id, "gate", 7, timeout=30))
        await asyncio.wait_for(app.started.wait(), 10)
        await client.close()
        with pytest.raises(PeerUnavailable):
            await asking
        await wait_until(lambda: not server.peers(), 10, "the client gone")
        app.release.set()
        await wait_until(lambda: counts(server, "gate")[1] == 1, 10, "handled")
        assert counts(server, "gate") == (1, 1, 0, 0, 0)
        assert server._dispatch.mailboxes()["target"]["queued"] == 0


class Counting(App):
    """``ask`` answers its body, and fails on every tenth."""

    name = "counting"

    @handler("ask")
    async def ask(self, message: Message) -> Any:
        if message.body % 10 == 0:
            raise ValueError("a tenth on purpose")
        return message.body


async def _ask_all(client: Node, peer: str, count: int) -> list[Any]:
    answers: list[Any] = []
    for n in range(count):
        try:
            answers.append(await client.request(peer, "ask", n, timeout=10))
        except RemoteError:
            answers.append("failed")
    return answers


async def test_with_metrics_on_requests_are_answered_counted_and_sampled(
        make_node: MakeNode) -> None:
    receiver = await make_node([Counting()], metrics=MetricsSettings(listen="127.0.0.1:0"))
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    answers = await _ask_all(sender, peer, 200)
    assert answers == ["failed" if n % 10 == 0 else n for n in range(200)]
    assert counts(receiver, "ask") == (200, 180, 20, 200, 0)
    assert receiver.metrics is not None
    timed = sum(receiver.metrics.timings.handler["ask"].counts)
    assert 1 <= timed < 200  # sampled: some through Work, the others as Asked
    assert timed == sum(receiver.metrics.timings.wait["counting"].counts)


async def test_with_tracing_on_requests_are_answered_counted_and_traced(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spans.jsonl"
    otel_env(monkeypatch, path)
    receiver = await make_node([Counting()])
    sender = await make_node([])
    assert receiver._tracing is not None
    peer = await sender.connect(receiver.addresses[0])
    answers = await _ask_all(sender, peer, 50)
    assert answers == ["failed" if n % 10 == 0 else n for n in range(50)]
    assert counts(receiver, "ask") == (50, 45, 5, 50, 0)
    await receiver.close()
    await sender.close()
    names = [(s.get("name"), s.get("kind")) for s in spans(path)]
    handled = [n for n in names if n[0] and "ask" in n[0] and "SERVER" in str(n[1]).upper()]
    assert len(handled) == 50, names[:10]


class Big(App):
    """``big`` answers ``body`` KiB, in order."""

    name = "big"

    def __init__(self) -> None:
        self.handled: list[int] = []

    @handler("big")
    async def big(self, message: Message) -> Any:
        self.handled.append(message.body)
        return bytes(128 * 1024)


async def test_replies_that_find_the_outbox_full_wait_and_keep_the_peer_s_order() -> None:
    app = Big()
    async with tcp_pair(app, options={"outbox_limit": 65536}) as (server, client):
        reading = channel_of(client, server.peer_id).connection
        reading.pause_reading()  # type: ignore[attr-defined]
        asks = [asyncio.ensure_future(client.request(server.peer_id, "big", n, timeout=60))
                for n in range(120)]
        out = channel_of(server, client.peer_id)
        # The server's outbox fills: a reply waits for room, and the requests behind it
        # wait in the mailbox.
        await wait_until(lambda: out._outbox_bytes >= out._limit
                         and len(app.handled) < 120
                         and server._dispatch.mailboxes()["big"]["queued"] > 0,
                         20, "a reply waiting for room")
        waiting = len(app.handled)
        await asyncio.sleep(0.2)
        assert len(app.handled) == waiting, "a handler ran while its peer's reply waited"
        reading.resume_reading()  # type: ignore[attr-defined]
        answers = await asyncio.gather(*asks)
        assert all(len(a) == 128 * 1024 for a in answers)
        assert app.handled == list(range(120))
        assert counts(server, "big") == (120, 120, 0, 120, 0)


async def test_a_handler_whose_own_task_is_cancelled_leaves_no_channel_and_no_stuck_peer(
    nodes: tuple[Node, Node, Target], caplog: pytest.LogCaptureFixture,
) -> None:
    server, client, app = nodes

    async def suicidal(message: Message) -> Any:
        app.kept.append(message)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the app cancels its handler's task: that request goes unanswered
        await asyncio.sleep(0)

    server.add_handler(app, "suicidal", suicidal)
    with caplog.at_level(logging.ERROR, logger="p2phost"):
        with pytest.raises(RequestTimeout):
            await client.request(server.peer_id, "suicidal", None, timeout=0.5)
        # The peer's next request runs (in a fresh task).
        assert await client.request(server.peer_id, "echo", 3, timeout=10) == 3
    assert "processing a message from" not in caplog.text
    assert counts(server, "suicidal") == (1, 0, 0, 0, 0)
    gc.collect()
    (kept,) = app.kept
    assert [o for o in gc.get_referents(kept) if isinstance(o, Channel)] == []


#: A caller's trace that is not sampled: its requests carry the context, and are Work
#: items run through Dispatcher.start (the handler runs bare, passing the context on).
UNSAMPLED = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.DEFAULT))


async def traced(make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 topic: str, call: Any) -> tuple[Node, Node, str]:
    """A receiver with a Target app and ``call`` handling ``topic``, and a sender
    connected to it (both tracing): (receiver, sender, the receiver's id)."""
    otel_env(monkeypatch, tmp_path / "spans.jsonl")
    app = Target()
    receiver = await make_node([app])
    sender = await make_node([])
    receiver.add_handler(app, topic, call)
    return receiver, sender, await sender.connect(receiver.addresses[0])


async def test_a_traced_request_whose_handler_raises_cancelled_error_at_once_is_answered(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A request carrying an unsampled trace context is a Work item run through
    # Dispatcher.start: a handler (not an async def) raising CancelledError as it is
    # called must fail that request, as on the Asked path, not end the mailbox's task
    # and leave the requester waiting for its whole timeout.
    receiver, sender, peer = await traced(make_node, tmp_path, monkeypatch,
                                          "cancel-at-once", cancel_at_once)
    with trace.use_span(NonRecordingSpan(UNSAMPLED)):
        with pytest.raises(RemoteError, match="CancelledError"):
            await sender.request(peer, "cancel-at-once", None, timeout=5)
        assert await sender.request(peer, "echo", 4, timeout=5) == 4
    assert counts(receiver, "cancel-at-once") == (1, 0, 1, 1, 0)


async def test_a_handler_that_is_not_an_async_def_runs_once_on_either_path(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain function that returns None (not an awaitable) fails its request, once: on
    # the Work path (a request with an unsampled trace context) Dispatcher.start's None
    # read as "not started", and _process called the handler a second time.
    calls: list[Any] = []

    def plain(message: Message) -> None:  # not an async def: returns None
        calls.append(message.body)

    receiver, sender, peer = await traced(make_node, tmp_path, monkeypatch, "plain", plain)
    with pytest.raises(RemoteError, match="TypeError"):
        await sender.request(peer, "plain", "asked", timeout=5)
    with trace.use_span(NonRecordingSpan(UNSAMPLED)):
        with pytest.raises(RemoteError, match="TypeError"):
            await sender.request(peer, "plain", "traced", timeout=5)
    assert calls == ["asked", "traced"]
    assert counts(receiver, "plain") == (2, 0, 2, 2, 0)


class Lifecycle(Target):
    """Target, recording the peer's loss in order with its requests."""

    async def on_peer_lost(self, peer: Any, reason: str) -> None:
        self.order.append("lost")


async def test_a_lost_peer_s_queued_requests_run_before_its_on_peer_lost() -> None:
    app = Lifecycle()
    async with tcp_pair(app) as (server, client):
        first, asks = await queued_behind_a_gate(server, client, app, 100)
        await client.close()
        await asyncio.gather(first, *asks, return_exceptions=True)
        app.release.set()
        await wait_until(lambda: "lost" in app.order, 10, "on_peer_lost called")
        assert app.order == ["connected", -1, *range(100), "lost"]
        # Handled, their replies dropped: the peer is gone.
        assert counts(server, "echo") == (100, 100, 0, 0, 0)
