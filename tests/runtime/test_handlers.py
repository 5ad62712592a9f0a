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
