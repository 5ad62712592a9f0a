"""Handlers run in tasks of their own: timeouts, cancellation and context variables
behave as anywhere else in asyncio, and a handler never takes its connection down."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, ClassVar

import pytest

from p2phost_sdk import App, Message, RemoteError, handler
from tests.runtime.conftest import MakeNode

_who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Tricky(App):
    """Handlers that time out, set a context variable, or wait until cancelled."""

    name: ClassVar[str] = "tricky"

    def __init__(self) -> None:
        self.lost: list[str] = []
        self.cancelled = 0
        self.started = asyncio.Event()

    @handler("times-out")
    async def times_out(self, message: Message) -> None:
        async with asyncio.timeout(0.2):
            await asyncio.sleep(5)

    @handler("set-var")
    async def set_var(self, message: Message) -> str:
        before = _who.get()
        _who.set(str(message.body))
        return before

    @handler("forever")
    async def forever(self, message: Message) -> None:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    @handler("ok")
    async def ok(self, message: Message) -> Any:
        return message.body

    async def on_peer_lost(self, peer: Any, reason: str) -> None:
        self.lost.append(reason)


async def test_a_handler_timing_out_answers_an_error_and_the_connection_stays(
    make_node: MakeNode
) -> None:
    app = Tricky()
    server = await make_node([app])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    with pytest.raises(RemoteError, match="timed out"):
        await client.request(peer, "times-out", None, timeout=5)
    assert await client.request(peer, "ok", "still here", timeout=5) == "still here"
    assert [p.peer_id for p in server.peers()] == [client.peer_id]
    assert app.lost == []


async def test_a_context_variable_set_by_a_handler_stays_in_that_handler(
    make_node: MakeNode
) -> None:
    server = await make_node([Tricky()])
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    assert await client.request(peer, "set-var", "first") == "nobody"
    assert await client.request(peer, "set-var", "second") == "nobody"
    # Requests that arrive together wait in the peer's queue together: the same holds.
    assert await asyncio.gather(*(client.request(peer, "set-var", str(i)) for i in range(20))
                                ) == ["nobody"] * 20


async def test_a_handler_cancelled_at_shutdown_does_not_break_the_drain(
    make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    app = Tricky()
    server = await make_node([app], drain_timeout=0.3)
    client = await make_node(listen=[])
    peer = await client.connect(server.addresses[0])
    await client.send(peer, "forever", None)
    await client.send(peer, "ok", "behind it")
    await asyncio.wait_for(app.started.wait(), 5)
    await asyncio.wait_for(server.close(), 10)
    assert app.cancelled == 1
    assert "Traceback" not in caplog.text
    assert "were not handled within the 0.3s drain timeout" in caplog.text


@pytest.mark.parametrize(("topic", "problem"), [
    ("orders\ncreated", r"'orders\\ncreated', which peers cannot use: it has a character "
                        r"that is not printable \('\\n'\)"),
    ("é" * 128, r"'éééé.*\.\.\., which peers cannot use: it is 256 bytes long in UTF-8, over "
                "the 255"),
    # No MESSAGE or REQUEST names none: the library and `p2phost send` refuse to send one.
    ("", r"'', which peers cannot use: it is empty"),
    ("  ", r"'  ', which peers cannot use: it is only spaces"),
    # (a lone surrogate: a str UTF-8 cannot encode)
    ("orders\ud800", r"'orders\\ud800', which peers cannot use: it has a character that is "
                     r"not printable \('\\ud800'\)"),
])
async def test_an_app_topic_peers_cannot_use_is_refused(make_node: MakeNode, topic: str,
                                                        problem: str) -> None:
    # Peers leave such a topic out of a hello: the node would never get a message of it.
    from p2phost._runtime import NodeConfigError

    class Unusable(App):
        name = "unusable"

        @handler(topic)
        async def bad(self, message: Message) -> None:
            pass

        @handler("fine")
        async def fine(self, message: Message) -> None:
            pass

    with pytest.raises(NodeConfigError, match=f"^app 'unusable' handles topic {problem}") as e:
        await make_node([Unusable()])
    assert e.value.fix is not None and "printable characters only" in e.value.fix
    assert "at most 255 bytes" in e.value.fix
    node = await make_node([Tricky()])  # ("set-var" and the others are as good as ever)
    assert "set-var" in node.topics
    node.add_handler(node._apps[0], "late-and-fine", Tricky.forever)
    with pytest.raises(NodeConfigError, match=f"^app 'tricky' handles topic {problem}"):
        node.add_handler(node._apps[0], topic, Tricky.forever)
    assert topic not in node.topics


def many_topics(count: int, size: int) -> App:
    """An app handling ``count`` topics of ``size`` bytes each."""
    def nothing() -> Any:  # (one function per topic: handler() marks the function)
        async def run(self: App, message: Message) -> None:
            pass
        return run

    handlers = {f"h{n}": handler(f"{n:05d}".ljust(size, "t"))(nothing()) for n in range(count)}
    return type("Many", (App,), {"name": "many", **handlers})()


async def test_a_node_whose_hello_peers_would_not_take_whole_does_not_start(
        make_node: MakeNode) -> None:
    # Peers take a hello of 64 KiB at most (no peer could connect: its dialler's error
    # would name a frame's size, not the topics) and 4096 of its topics (the rest would
    # be left out): the node says so where its operator can act, naming the fix.
    from p2phost._runtime import NodeConfigError

    with pytest.raises(NodeConfigError, match=r"this node's hello would be \d+ bytes long "
                       r"with its 300 topics, over the 65536") as e:
        await make_node([many_topics(300, 250)])
    assert e.value.fix is not None and "fewer topics" in e.value.fix
    with pytest.raises(NodeConfigError, match=r"this node handles 4100 topics, over the 4096 "
                       r"a peer takes from a hello"):
        await make_node([many_topics(4100, 8)])
    # A handler added while it runs: refused, not added; peers still connect.
    node = await make_node([many_topics(200, 250)])
    with pytest.raises(NodeConfigError, match="this node's hello would be"):
        for n in range(100):
            node.add_handler(node._apps[0], f"late-{n}".ljust(250, "x"), Tricky.forever)
    assert len(node.topics) == 200 + n
    client = await make_node(listen=[])
    peer = await client.connect(node.addresses[0])
    assert len(client.hello_of(peer).topics) == 200 + n  # type: ignore[union-attr]
