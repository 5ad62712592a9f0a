"""A plain request as its own mailbox item (``_received.Asked``): no ``Work`` around it.

The mailbox's task runs the handler and hands its result to ``Dispatcher.answer``; what
``Dispatcher.start`` and ``finish`` did for such a request must still hold:

* the answer goes to the request's own id, whatever the handler does with ``message.id``;
* a request whose requester stopped waiting before its handler could start is dropped
  unanswered and counted, its handler never run;
* a handler that raises (at once, or after awaiting) answers with the error, and a
  result the codec cannot encode answers with an error saying so;
* once answered, a message the handler keeps holds no channel (nor its connection);
* the answers to many requests in a row leave while the rest are handled, over a
  connection with ``try_send_many`` (tcp) and over one without (tls-security).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2phost._runtime import Kind, Node, decode, encode
from p2phost._runtime.wire._channel import FRAMES_TOGETHER, Channel
from p2phost_sdk import (
    App,
    Connection,
    Identity,
    Message,
    RemoteError,
    RequestTimeout,
    handler,
)
from p2phost_sdk.testing.discovery import wait_until
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import build_node, channel_of, tcp_pair
from tests.runtime.rawpeer import dial_as

for _name in ("tcp-transport", "msgpack-codec", "tls-security"):
    use_plugin_source(_name)

from p2phost_tls_security import TlsSecurity  # noqa: E402


class Answers(App):
    """Request handlers for each case."""

    name = "answers"

    def __init__(self) -> None:
        self.kept: list[Message] = []
        self.ran: list[Any] = []
        self.release = asyncio.Event()

    @handler("renamed")
    async def renamed(self, message: Message) -> Any:
        message.id = "not the frame's"  # an app may; its answer still goes to the request
        return message.body

    @handler("keep")
    async def keep(self, message: Message) -> Any:
        self.kept.append(message)
        return len(self.kept)

    @handler("slow")
    async def slow(self, message: Message) -> Any:
        await self.release.wait()
        return "slow done"

    @handler("quick")
    async def quick(self, message: Message) -> Any:
        self.ran.append(message.body)
        return "quick done"

    @handler("boom")
    async def boom(self, message: Message) -> Any:
        await asyncio.sleep(0)
        raise ValueError(f"boom on purpose ({message.body})")

    @handler("unencodable")
    async def unencodable(self, message: Message) -> Any:
        return object()


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words for it")


async def unprintable(message: Message) -> Any:
    raise Unprintable


def eager_boom(message: Message) -> Any:  # not an async def: it raises before any await
    raise KeyError("raised at once")


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node, Answers]]:
    app = Answers()
    async with tcp_pair(app) as (server, client):
        yield server, client, app


async def test_the_answer_goes_to_the_request_whatever_the_handler_does_with_its_id(
    nodes: tuple[Node, Node, Answers],
) -> None:
    server, client, _ = nodes
    answers = await asyncio.gather(
        *(client.request(server.peer_id, "renamed", n, timeout=10) for n in range(20)))
    assert answers == list(range(20))


async def test_a_request_past_its_deadline_before_its_handler_is_dropped_unanswered(
    nodes: tuple[Node, Node, Answers],
) -> None:
    server, client, app = nodes
    # The peer's items run in order: "quick" waits behind "slow" until its requester
    # has stopped waiting, so its handler must not run at all.
    slow = asyncio.ensure_future(client.request(server.peer_id, "slow", None, timeout=10))
    stats = server.delivery.stats
    await wait_until(lambda: stats.get("slow", "received") == 1, 10, "slow taken")
    with pytest.raises(RequestTimeout):
        await client.request(server.peer_id, "quick", "late", timeout=0.2)
    app.release.set()
    assert await slow == "slow done"
    await wait_until(lambda: stats.get("quick", "dropped") == 1, 10, "the late one dropped")
    assert app.ran == []
    assert (stats.get("quick", "received"), stats.get("quick", "handled"),
            stats.get("quick", "sent")) == (1, 0, 0)
    # The next one, in time, runs.
    assert await client.request(server.peer_id, "quick", "on time", timeout=10) == "quick done"
    assert app.ran == ["on time"]


async def test_a_handler_that_raises_answers_with_the_error(
    nodes: tuple[Node, Node, Answers],
) -> None:
    server, client, app = nodes
    with pytest.raises(RemoteError, match=r"ValueError: boom on purpose \(x\)"):
        await client.request(server.peer_id, "boom", "x", timeout=10)
    server.add_handler(app, "eager-boom", eager_boom)
    with pytest.raises(RemoteError, match="KeyError: 'raised at once'"):
        await client.request(server.peer_id, "eager-boom", None, timeout=10)
    with pytest.raises(RemoteError, match="the handler's result cannot be encoded"):
        await client.request(server.peer_id, "unencodable", None, timeout=10)
    server.add_handler(app, "unprintable", unprintable)  # its str() raises: still answered
    with pytest.raises(RemoteError, match=r"Unprintable: \(no message"):
        await client.request(server.peer_id, "unprintable", None, timeout=10)
    stats = server.delivery.stats
    assert (stats.get("boom", "failed"), stats.get("boom", "handled"),
            stats.get("boom", "sent")) == (1, 0, 1)
    assert stats.get("eager-boom", "failed") == 1
    # The node goes on answering.
    assert await client.request(server.peer_id, "keep", None, timeout=10) == 1


async def test_an_answered_message_a_handler_keeps_holds_no_channel(
    nodes: tuple[Node, Node, Answers],
) -> None:
    server, client, app = nodes
    for n in range(3):
        assert await client.request(server.peer_id, "keep", n, timeout=10) == n + 1
    stats = server.delivery.stats
    assert (stats.get("keep", "handled"), stats.get("keep", "sent")) == (3, 3)
    gc.collect()
    for message in app.kept:
        held = [o for o in gc.get_referents(message) if isinstance(o, Channel)]
        assert held == [], "an answered request's message still holds its channel"


class Gated(App):
    """``slow`` answers once its gate opens; ``quick`` at once (json bodies)."""

    name = "gated"

    def __init__(self) -> None:
        self.began, self.gate = asyncio.Event(), asyncio.Event()

    @handler("slow")
    async def slow(self, message: Message) -> Any:
        self.began.set()
        await self.gate.wait()
        self.began.clear()
        self.gate.clear()
        return "slow"

    @handler("quick")
    async def quick(self, message: Message) -> Any:
        return "quick"


async def _answer_on(connection: Connection) -> tuple[int, bytes]:
    """The first REPLY or ERROR the node sends on ``connection``: (its request's id, body)."""
    while True:
        envelope = decode(await connection.recv())
        if envelope.kind in (Kind.REPLY, Kind.ERROR):
            return envelope.correlation_id, envelope.body


async def test_a_reply_whose_connection_ended_goes_to_the_same_session_only() -> None:
    # The request's connection ended while its handler ran: the reply goes on the peer's
    # connection of the same session (it reconnected), never on another session's (it
    # restarted: its new requests may reuse the id, and would take the old answer).
    app = Gated()
    node = build_node("tcp", [app])
    await node.start()
    address, identity = node.addresses[0], Identity.generate()
    opened: list[Connection] = []

    async def asked_and_left(nonce: str, session: str, request_id: int) -> None:
        # A slow request on a connection of its own, closed while its handler runs.
        connection = await dial_as(address, identity, nonce, session=session)
        opened.append(connection)
        await connection.send(encode(Kind.REQUEST, request_id, b"slow", b"null"))
        await asyncio.wait_for(app.began.wait(), 10)
        await connection.close()

    try:
        await asked_and_left("a", "one", 7)
        again = await dial_as(address, identity, "b", session="one")  # the same session
        opened.append(again)
        app.gate.set()
        assert await asyncio.wait_for(_answer_on(again), 10) == (7, b'"slow"')
        await again.close()
        await asked_and_left("c", "one", 8)
        restarted = await dial_as(address, identity, "d", session="two")  # a new session
        opened.append(restarted)
        app.gate.set()
        await restarted.send(encode(Kind.REQUEST, 8, b"quick", b"null"))  # the same id
        assert await asyncio.wait_for(_answer_on(restarted), 10) == (8, b'"quick"'), \
            "the old session's answer went to the new session"
    finally:
        for connection in opened:
            await connection.close()
        await node.close()


class Counted(App):
    """``count`` answers at once, noting the bytes its channel had handed to the transport
    when each request was handled (``channel``: set by the test)."""

    name = "counted"

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.handed: list[int] = []

    @handler("count")
    async def count(self, message: Message) -> Any:
        assert self.channel is not None
        self.handed.append(self.channel._handed)
        return len(self.handed)


async def test_answers_to_many_requests_in_a_row_go_out_while_the_rest_are_handled() -> None:
    # 64 requests in one write, handlers that never wait: the answers are handed to the
    # transport in runs of FRAMES_TOGETHER while the rest are still to be handled (both
    # nodes busy at once), not all 64 after the last.
    app = Counted()
    node = build_node("tcp", [app])
    await node.start()
    identity = Identity.generate()
    connection = await dial_as(node.addresses[0], identity, "a")
    try:
        await wait_until(lambda: node._table.get(identity.peer_id) is not None, 10, "joined")
        app.channel = channel_of(node, identity.peer_id)
        requests = [encode(Kind.REQUEST, n, b"count", b"null") for n in range(1, 65)]
        await connection.send_many(requests)
        answered: list[int] = []
        async with asyncio.timeout(10):
            while len(answered) < 64:
                envelope = decode(await connection.recv())
                if envelope.kind is Kind.REPLY:
                    answered.append(envelope.correlation_id)
        assert answered == list(range(1, 65))  # in order, each once
        smallest = len(encode(Kind.REPLY, 0, body=b"1"))  # (an answer's frame, at least)
        first, last = app.handed[0], app.handed[-1]
        # The first answer went alone, the next three runs as they were queued.
        assert last - first >= 3 * FRAMES_TOGETHER * smallest, \
            "the first answers were not written before the last request was handled"
    finally:
        await connection.close()
        await node.close()


async def test_answers_leave_while_the_rest_are_handled_without_try_send_many() -> None:
    # tls-security's connection hands no run over at once (the SDK's default): the
    # answers wait for the writer's turn, and the mailbox lets the loop turn for it
    # once a run of them is queued, so they still leave while the rest are handled.
    app = Counted()
    async with tcp_pair(app, [TlsSecurity()]) as (server, client):
        app.channel = channel_of(server, client.peer_id)
        assert type(app.channel.connection).try_send_many is Connection.try_send_many
        await client.request(server.peer_id, "count", None, timeout=10)  # warmed up
        app.handed.clear()
        await asyncio.gather(*(client.request(server.peer_id, "count", n, timeout=10)
                               for n in range(64)))
        smallest = len(encode(Kind.REPLY, 0, body=b"1"))
        assert app.handed[-1] - app.handed[0] >= FRAMES_TOGETHER * smallest, \
            "only the first answer left before the last request was handled"
