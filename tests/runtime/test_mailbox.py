"""The mailbox on its own: per-peer order, one at a time, a bound, and a drain."""

from __future__ import annotations

import asyncio

import pytest

from p2phost._runtime import Mailbox


async def test_order_per_peer_one_at_a_time_and_peers_side_by_side() -> None:
    seen: dict[str, list[int]] = {}
    busy: set[str] = set()
    most = 0

    async def process(peer: str, item: int) -> None:
        nonlocal most
        assert peer not in busy
        busy.add(peer)
        most = max(most, len(busy))
        await asyncio.sleep(0)
        seen.setdefault(peer, []).append(item)
        busy.discard(peer)

    mailbox: Mailbox[int] = Mailbox("test", 1000, process)
    for i in range(100):
        for peer in ("a", "b", "c"):
            assert mailbox.try_put(peer, i)
    assert await mailbox.close(5) == 0
    assert seen == {p: list(range(100)) for p in "abc"}
    assert most == 3


async def test_a_full_mailbox_makes_put_wait_and_loses_nothing() -> None:
    gate = asyncio.Event()
    done: list[int] = []

    async def process(peer: str, item: int) -> None:
        await gate.wait()
        done.append(item)

    mailbox: Mailbox[int] = Mailbox("test", 3, process)
    for i in range(3):
        assert mailbox.try_put("a", i)
    assert not mailbox.try_put("a", 3)
    waiting = asyncio.ensure_future(mailbox.put("a", 3))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(mailbox) == 3
    gate.set()
    await asyncio.wait_for(waiting, 5)
    await mailbox.close(5)
    assert done == [0, 1, 2, 3]


async def test_close_gives_up_after_the_timeout_and_reports_what_is_left() -> None:
    async def process(peer: str, item: int) -> None:
        await asyncio.sleep(10)

    mailbox: Mailbox[int] = Mailbox("test", 10, process)
    mailbox.try_put("a", 1)
    mailbox.try_put("a", 2)
    assert await mailbox.close(0.1) == 2
    mailbox.put_nowait("a", 3)  # after close: dropped, no worker left behind
    assert len(mailbox) == 0


async def test_an_item_that_raises_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture
) -> None:
    done: list[int] = []

    async def process(peer: str, item: int) -> None:
        if item == 1:
            raise RuntimeError("bad item")
        done.append(item)

    mailbox: Mailbox[int] = Mailbox("test", 10, process)
    for i in range(3):
        mailbox.try_put("a", i)
    await mailbox.close(5)
    assert done == [0, 2]
    assert "bad item" in caplog.text


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Mailbox("test", 0, lambda peer, item: asyncio.sleep(0))
