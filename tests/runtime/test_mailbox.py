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


async def test_each_item_runs_in_its_own_task_and_a_waiting_one_keeps_its_turn() -> None:
    gate = asyncio.Event()
    log: list[str] = []
    tasks: set[asyncio.Task[object] | None] = set()

    async def process(peer: str, item: str) -> None:
        tasks.add(asyncio.current_task())
        log.append(f"start {item}")
        if item == "waits":
            await gate.wait()
        log.append(f"end {item}")

    mailbox: Mailbox[str] = Mailbox("test", 10, process)
    assert mailbox.try_put("a", "quick")
    assert mailbox.try_put("a", "waits")
    assert mailbox.try_put("a", "after")
    assert mailbox.try_put("b", "other peer")
    await asyncio.sleep(0.01)
    assert log[:2] == ["start quick", "end quick"]
    assert sorted(log[2:]) == sorted(["start waits", "start other peer", "end other peer"])
    assert len(mailbox) == 2, "the waiting item and the one behind it still hold room"
    gate.set()
    await mailbox.close(5)
    assert log[5:] == ["end waits", "start after", "end after"]
    assert len(tasks) == 4 and asyncio.current_task() not in tasks


async def test_closing_cancels_a_started_item_that_never_finishes() -> None:
    cancelled = []

    async def process(peer: str, item: int) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    mailbox: Mailbox[int] = Mailbox("test", 10, process)
    mailbox.try_put("a", 1)
    assert await mailbox.close(0.1) == 1
    assert cancelled == [1]
