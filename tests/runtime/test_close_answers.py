"""A node that closes with its own requests in flight still gets their replies.

The peer answers its GOODBYE at once, before the requests queued in its mailbox: the
closing node went on to close the connection as soon as that came, and the requests
still unanswered failed with "PeerUnavailable: ... the node shut down" (over
tls-security, 600 of 3,000 requests from a library client that left ``async with``
5 ms after making them; over plaintext the replies usually won the race).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from p2phost_sdk import App, Message, PeerUnavailable, handler
from tests.discovery.plugins import use_plugin_source
from tests.runtime.conftest import build_node, tcp_pair

for _name in ("tcp-transport", "msgpack-codec", "tls-security"):
    use_plugin_source(_name)

from p2phost_tls_security import TlsSecurity  # noqa: E402


class Slow(App):
    """``echo`` answers its body after a millisecond."""

    name = "slow"

    @handler("echo")
    async def echo(self, message: Message) -> Any:
        await asyncio.sleep(0.001)
        return message.body


@pytest.mark.parametrize("security", ["plain", "tls"])
async def test_a_closing_node_waits_for_the_replies_to_its_requests(security: str) -> None:
    async with tcp_pair(Slow(), [TlsSecurity()] if security == "tls" else []) \
            as (server, client):
        asks = [asyncio.ensure_future(client.request(server.peer_id, "echo", n, timeout=30))
                for n in range(300)]
        await asyncio.sleep(0.005)
        started = time.monotonic()
        await client.close()
        assert time.monotonic() - started < 8  # (300 ms of handlers, and the goodbyes)
        assert await asyncio.gather(*asks) == list(range(300))


class Never(App):
    """``never`` never answers."""

    name = "never"

    @handler("never")
    async def never(self, message: Message) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize(("timeout", "drain", "waited"),
                         [(60.0, 1.0, True), (None, 3.0, False)])
async def test_a_closing_node_waits_for_replies_no_longer_than_its_drain_timeout(
        timeout: float | None, drain: float, waited: bool) -> None:
    # (A request without a deadline, a long poll, is not waited for at all.)
    async with tcp_pair(Never(), options={"drain_timeout": 1.0}) as (server, _):
        client = build_node("tcp", listen=[], codecs=("application/msgpack",),
                            drain_timeout=drain)
        await client.start()
        try:
            await client.connect(server.addresses[0])
            ask = asyncio.ensure_future(client.request(server.peer_id, "never", 1,
                                                       timeout=timeout))
            await asyncio.sleep(0.1)
            started = time.monotonic()
        finally:
            await client.close()
        took = time.monotonic() - started
        # (then 1 s for the last bytes, and tcp's 2 s, at most)
        assert (drain <= took < drain + 3.5) if waited else took < drain
        with pytest.raises(PeerUnavailable, match="the node shut down"):
            await ask
