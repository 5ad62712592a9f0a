"""The mailbox on its own: per-peer order, one at a time, a bound, and a drain."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable
from typing import Any

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

    mailbox: Mailbox[Any] = Mailbox("test", 1000, process)
    for i in range(100):
        for peer in ("a", "b", "c"):
            assert mailbox.try_put(peer, it(i))
    assert await mailbox.close(5) == 0
    assert seen == {p: list(range(100)) for p in "abc"}
    assert most == 3


async def test_a_full_mailbox_makes_put_wait_and_loses_nothing() -> None:
    gate = asyncio.Event()
    done: list[int] = []

    async def process(peer: str, item: int) -> None:
        await gate.wait()
        done.append(item)

    mailbox: Mailbox[Any] = Mailbox("test", 3, process)
    for i in range(3):
        assert mailbox.try_put("a", it(i))
    assert not mailbox.try_put("a", it(3))
    waiting = asyncio.ensure_future(mailbox.put("a", it(3)))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(mailbox) == 3
    gate.set()
    await asyncio.wait_for(waiting, 5)
    await mailbox.close(5)
    assert done == [0, 1, 2, 3]


async def test_close_gives_up_after_the_timeout_and_reports_what_is_left() -> None:
    async def process(peer: str, item: int) -> None:
        await asyncio.sleep(10)

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    mailbox.try_put("a", it(1))
    mailbox.try_put("a", it(2))
    assert await mailbox.close(0.1) == 2
    mailbox.put_nowait("a", it(3))  # after close: dropped, no worker left behind
    assert len(mailbox) == 0


async def test_an_item_that_raises_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture
) -> None:
    done: list[int] = []

    async def process(peer: str, item: int) -> None:
        if item == 1:
            raise RuntimeError("bad item")
        done.append(item)

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    for i in range(3):
        mailbox.try_put("a", it(i))
    await mailbox.close(5)
    assert done == [0, 2]
    assert "bad item" in caplog.text


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Mailbox("test", 0, lambda peer, item: asyncio.sleep(0))


async def test_items_run_in_the_mailboxs_tasks_and_a_waiting_one_keeps_its_turn() -> None:
    gate = asyncio.Event()
    log: list[str] = []
    tasks: set[asyncio.Task[object] | None] = set()

    async def process(peer: str, item: str) -> None:
        tasks.add(asyncio.current_task())
        log.append(f"start {item}")
        if item == "waits":
            await gate.wait()
        log.append(f"end {item}")

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    # All queued before any runs: from a callback (from a task, on 3.12+ "quick" would
    # start and end eagerly inside its put, in a task of its own).
    for peer, item in (("a", "quick"), ("a", "waits"), ("a", "after"), ("b", "other peer")):
        await _put(mailbox, peer, item)
    await asyncio.sleep(0.01)
    assert log[:2] == ["start quick", "end quick"]
    assert sorted(log[2:]) == sorted(["start waits", "start other peer", "end other peer"])
    assert len(mailbox) == 2, "the waiting item and the one behind it still hold room"
    gate.set()
    await mailbox.close(5)
    assert log[5:] == ["end waits", "start after", "end after"]
    assert asyncio.current_task() not in tasks
    # Peer a's items changed nothing a task would show, so one task ran all three.
    assert len(tasks) == 2


async def test_closing_cancels_a_started_item_that_never_finishes() -> None:
    cancelled = []

    async def process(peer: str, item: int) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    mailbox.try_put("a", it(1))
    assert await mailbox.close(0.1) == 1
    assert cancelled == [1]


_seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


async def test_a_context_variable_set_by_one_item_is_not_seen_by_the_item_queued_behind() -> None:
    seen: list[str] = []
    tasks: list[asyncio.Task[object] | None] = []

    async def process(peer: str, item: str) -> None:
        tasks.append(asyncio.current_task())
        seen.append(_seen.get())
        if item == "sets":
            _seen.set("set by the first item")

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    # Queued together, before any runs (from a callback: from a task, on 3.12+ each
    # item would run eagerly inside its put, each in a task of its own).
    await _in_callback(lambda: [mailbox.try_put("a", it(item))
                                for item in ("sets", "reads", "reads too")])
    assert await mailbox.close(5) == 0
    assert seen == ["unset", "unset", "unset"]
    assert tasks[0] is not tasks[1], "the next item starts from a fresh task"
    assert tasks[1] is tasks[2]


async def test_a_timeout_in_one_item_leaves_the_next_items_timeouts_working() -> None:
    outcomes: list[str] = []

    async def process(peer: str, item: str) -> None:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5 if item.startswith("slow") else 0.001)
            outcomes.append(f"{item}: done")
        except TimeoutError:
            outcomes.append(f"{item}: timed out")
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    for item in ("slow 1", "quick", "slow 2", "quick again"):
        assert mailbox.try_put("a", it(item))
    assert await mailbox.close(5) == 0
    assert outcomes == ["slow 1: timed out", "quick: done", "slow 2: timed out",
                        "quick again: done"]


async def test_an_item_that_swallows_its_cancellation_leaves_a_clean_task_to_the_next() -> None:
    started = asyncio.Event()
    outcomes: list[str] = []
    tasks: list[asyncio.Task[object] | None] = []

    async def process(peer: str, item: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        if item == "swallows":
            started.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                outcomes.append("swallowed")  # and returns as if nothing happened
            return
        outcomes.append(f"{item}: cancelling {task.cancelling()}")
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            outcomes.append(f"{item}: timed out")

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    assert mailbox.try_put("a", it("swallows"))
    assert mailbox.try_put("a", it("next"))
    await asyncio.wait_for(started.wait(), 5)
    tasks[0].cancel()
    assert await mailbox.close(5) == 0
    assert outcomes == ["swallowed", "next: cancelling 0", "next: timed out"]
    assert tasks[0] is not tasks[1]


async def test_a_cancelled_item_does_not_stop_the_items_behind_it() -> None:
    started = asyncio.Event()
    done: list[str] = []
    tasks: list[asyncio.Task[object] | None] = []

    async def process(peer: str, item: str) -> None:
        tasks.append(asyncio.current_task())
        if item == "cancelled":
            started.set()
            await asyncio.sleep(5)
        done.append(item)

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    for item in ("cancelled", "next", "last"):
        assert mailbox.try_put("a", it(item))
    await asyncio.wait_for(started.wait(), 5)
    tasks[0].cancel()
    assert await mailbox.close(5) == 0
    assert done == ["next", "last"]


async def test_a_long_run_from_one_peer_lets_another_peers_items_in_between() -> None:
    order: list[str] = []

    async def process(peer: str, item: int) -> None:
        order.append(peer)  # never waits: only the mailbox can let the others run

    mailbox: Mailbox[Any] = Mailbox("test", 1000, process)
    # A queue to run: put from a callback (from a task, on 3.12+ each item would run
    # eagerly inside its put, so the producer, not this queue, would hold the loop).
    assert all(await _in_callback(
        lambda: [mailbox.try_put("busy", it(i)) for i in range(500)]
        + [mailbox.try_put("other", it(0))]))
    assert await mailbox.close(5) == 0
    assert order.count("busy") == 500
    assert order.index("other") < 200, "the busy peer held the loop for its whole queue"


async def test_a_peer_sending_one_at_a_time_keeps_one_task_that_waits_idle() -> None:
    tasks: list[asyncio.Task[object] | None] = []
    done = asyncio.Event()

    async def process(peer: str, item: int) -> None:
        tasks.append(asyncio.current_task())
        done.set()

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    for i in range(5):
        done.clear()
        await _put(mailbox, "a", i)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0)  # the handler returned: its task waits for the next item
        assert mailbox.running == 0 and len(mailbox) == 0
    assert len(set(map(id, tasks))) == 1
    idle = tasks[0]
    assert idle is not None and not idle.done()
    assert await mailbox.close(5) == 0
    assert idle.done(), "close ends the tasks that wait idle"


async def test_an_idle_task_ends_when_a_handler_changed_its_context_or_the_peer_went() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    tasks: list[asyncio.Task[object] | None] = []
    seen: list[str] = []
    done = asyncio.Event()

    async def process(peer: str, item: str) -> None:
        tasks.append(asyncio.current_task())
        seen.append(var.get())
        if item == "sets":
            var.set("leaked")
        done.set()

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    for item in ("sets", "after", "last"):
        done.clear()
        await _put(mailbox, "a", item)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0)
    assert seen == ["unset", "unset", "unset"]
    assert tasks[0] is not tasks[1] and tasks[1] is tasks[2]
    last = tasks[2]
    assert last is not None and not last.done()
    mailbox.peer_gone("a")
    await asyncio.wait_for(last, 5)
    assert mailbox._queues == {}, "a gone peer's queue is forgotten once its task ended"
    await mailbox.close(5)


async def test_an_item_put_in_another_context_starts_from_it_in_a_fresh_task() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    tasks: list[asyncio.Task[object] | None] = []
    seen: list[str] = []
    done = asyncio.Event()

    async def process(peer: str, item: int) -> None:
        tasks.append(asyncio.current_task())
        seen.append(var.get())
        done.set()

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    await _put(mailbox, "a", 0)
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0)
    done.clear()
    var.set("caller's")
    await _put(mailbox, "a", 1)
    await asyncio.wait_for(done.wait(), 5)
    assert seen == ["unset", "caller's"]
    assert tasks[0] is not tasks[1]
    assert await mailbox.close(5) == 0


async def _idle_mailbox() -> tuple[Mailbox[Any], list[asyncio.Task[object] | None],
                                   list[int], asyncio.Task[object]]:
    """A mailbox that records each item's task, with peer "a"'s task idle after item 0."""
    tasks: list[asyncio.Task[object] | None] = []
    done: list[int] = []

    async def process(peer: str, item: int) -> None:
        tasks.append(asyncio.current_task())
        done.append(item)

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    await _put(mailbox, "a", 0)
    await _turns()
    idle = tasks[0]
    assert done == [0] and idle is not None and not idle.done()
    return mailbox, tasks, done, idle


async def test_an_idle_task_cancelled_with_an_item_handed_to_it_loses_nothing() -> None:
    mailbox, _, done, idle = await _idle_mailbox()
    await _in_callback(lambda: (mailbox.try_put("a", it(1)), idle.cancel()))  # handed, then
    assert await mailbox.close(5) == 0  # cancelled before it ran
    assert done == [0, 1]


async def test_an_item_for_an_idle_task_cancelled_before_it_ran_starts_a_fresh_one() -> None:
    mailbox, tasks, done, idle = await _idle_mailbox()
    await _in_callback(lambda: (idle.cancel(), mailbox.try_put("a", it(1))))
    await _turns()
    assert done == [0, 1] and tasks[1] is not idle and idle.cancelled()
    await _in_callback(idle.cancel)  # and close() with a cancelled idle task
    assert await mailbox.close(5) == 0


async def test_only_so_many_tasks_wait_idle_the_longest_idle_ends_first() -> None:
    from p2phost._runtime.messaging import _mailbox

    tasks: dict[str, asyncio.Task[object] | None] = {}

    async def process(peer: str, item: int) -> None:
        tasks[peer] = asyncio.current_task()

    mailbox: Mailbox[Any] = Mailbox("test", 1000, process)
    peers = [f"p{i}" for i in range(_mailbox._PARK + 1)]
    for peer in peers:
        await _put(mailbox, peer, 0)
        await _turns()
        assert peer in tasks
    await _turns()
    first = tasks[peers[0]]
    assert first is not None and first.done()
    assert all(not t.done() for p, t in tasks.items() if p != peers[0] and t is not None)
    assert await mailbox.close(5) == 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="tasks start eagerly on 3.12+ only")
async def test_from_a_task_an_item_starts_eagerly_and_its_peer_still_runs_one_at_a_time() -> None:
    gate = asyncio.Event()
    log: list[str] = []

    async def process(peer: str, item: str) -> None:
        log.append(f"start {item}")
        if item == "waits":
            await gate.wait()
        log.append(f"end {item}")

    mailbox: Mailbox[Any] = Mailbox("test", 10, process)
    assert mailbox.try_put("a", it("quick")) and log == ["start quick", "end quick"]
    assert mailbox.try_put("a", it("waits")) and mailbox.try_put("a", it("after"))
    assert log[2:] == ["start waits"] and mailbox.running == 1 and len(mailbox) == 2
    gate.set()
    assert await mailbox.close(5) == 0
    assert log[3:] == ["end waits", "start after", "end after"]


async def _turns(count: int = 3) -> None:
    """A few loop turns: a task started now has run to its first wait (no I/O here)."""
    for _ in range(count):
        await asyncio.sleep(0)


class _Int(int):
    _size = 0  # what a mailbox counts against its bytes


class _Str(str):
    _size = 0


def it(item: Any) -> Any:
    """``item`` as a mailbox takes it (with a ``_size``), equal to what it was."""
    return _Int(item) if isinstance(item, int) else _Str(item)


async def _put(mailbox: Mailbox[Any], peer: str, item: Any) -> None:
    """Put ``item`` as push-mode receive does, from a callback (never eagerly started)."""
    assert await _in_callback(lambda: mailbox.try_put(peer, it(item)))


async def _in_callback(call: Callable[[], Any]) -> Any:
    """What ``call`` returns when the loop calls it (not in a task)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Any] = loop.create_future()
    loop.call_soon(lambda: result.set_result(call()))
    return await result
