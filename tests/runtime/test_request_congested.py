"""A request whose frame waits for room in a congested outbox still times out on time:
its wait for room is bounded by the request's own timeout (it waited for the room,
unbounded, and only then for the reply: RequestTimeout(1 s) came after 4-7 s)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from p2phost_sdk import App, Message, RequestTimeout, handler

from .conftest import tcp_pair


class SlowSink(App):
    """Takes a 64 KiB message every 50 ms: the sender's outbox stays full."""

    name = "slow-sink"
    mailbox_size = 8

    @handler("slow")
    async def slow(self, message: Message) -> None:
        await asyncio.sleep(0.05)

    @handler("echo")
    async def echo(self, message: Message) -> object:
        return message.body


async def test_a_request_behind_a_full_outbox_times_out_on_time() -> None:
    async with tcp_pair(SlowSink()) as (server, client):
        async def flood() -> None:
            for _ in range(250):
                await client.send(server.peer_id, "slow", b"x" * 65536)

        flooding = asyncio.ensure_future(flood())
        try:
            await asyncio.sleep(1.0)  # the outbox is full by now
            started = time.monotonic()
            with pytest.raises(RequestTimeout, match=r"'echo' request within 1s"):
                await asyncio.wait_for(client.request(server.peer_id, "echo", b"hi",
                                                      timeout=1.0), 20)
            assert time.monotonic() - started < 2.0
        finally:
            flooding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flooding
