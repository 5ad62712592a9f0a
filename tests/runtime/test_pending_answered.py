"""``PendingRequests.answered``: what a closing node waits for, woken by the replies."""

from __future__ import annotations

import asyncio
from typing import Any

from p2phost._runtime.messaging._pending import FOREVER, PendingRequests


def _ask(pending: PendingRequests, message_id: int, peer: str, due: float = 1e9
         ) -> asyncio.Future[Any]:
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pending._pending[message_id] = (peer, "topic", reply, due, 10.0)
    return reply


async def test_it_returns_as_the_last_reply_comes_and_waits_for_one_asked_meanwhile() -> None:
    pending = PendingRequests()
    first = _ask(pending, 1, "a")
    _ask(pending, 2, "b")  # another peer's: not waited for
    _ask(pending, 3, "a", due=FOREVER)  # no deadline (a long poll): not waited for
    waiting = asyncio.ensure_future(pending.answered({"a"}, timeout=5.0))
    await asyncio.sleep(0.01)
    later = _ask(pending, 4, "a")  # a handler's request as the node closes
    first.set_result("one")
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the request made meanwhile has no reply yet
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, later.set_result, "four")
    started = loop.time()
    await asyncio.wait_for(waiting, 1.0)
    assert loop.time() - started < 0.5


async def test_it_gives_up_at_its_timeout() -> None:
    pending = PendingRequests()
    _ask(pending, 1, "a")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pending.answered({"a"}, timeout=0.1)
    assert 0.09 <= loop.time() - started < 1.0
