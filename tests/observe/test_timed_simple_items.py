"""With metrics on, a plain one-way message not timed is a simple item (no ``Work``, no
``Dispatcher.start``), as with metrics off: the sampled ones are timed all the same, and
the counters count every message, handled or failed."""

from __future__ import annotations

from typing import Any

from p2phost._observability import MetricsSettings
from p2phost_sdk import App, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture

BATCH = 200


class Notes(App):
    """``note`` raises on every tenth body."""

    name = "notes"

    @handler("note")
    async def note(self, message: Message) -> None:
        if message.body % 10 == 0:
            raise ValueError("a tenth on purpose")


async def test_plain_one_way_messages_are_simple_items_and_still_timed(
        make_node: MakeNode) -> None:
    receiver = await make_node([Notes()], metrics=MetricsSettings(listen="127.0.0.1:0"))
    sender = await make_node([])
    assert receiver.metrics is not None
    timings, stats = receiver.metrics.timings, receiver.delivery.stats
    dispatch = receiver._dispatch
    started = 0
    start = dispatch.start

    def counted(item: Any) -> Any:
        nonlocal started
        started += item.message is not None  # (not a lifecycle call)
        return start(item)
    dispatch.start = counted  # type: ignore[method-assign]  # (the mailboxes' Direct)
    peer = await sender.connect(receiver.addresses[0])

    async def batch(handled: int) -> int:
        """Send BATCH messages, wait until ``handled`` were handled or failed in all: the
        messages timed so far."""
        for i in range(BATCH):
            await sender.send(peer, "note", i)
        await wait_until(lambda: stats.get("note", "handled") + stats.get("note", "failed")
                         == handled, 20, "every message handled or failed")
        timed = sum(timings.handler["note"].counts)
        # Each timed message: its mailbox wait and its handler's run.
        assert timed == sum(timings.wait["notes"].counts)
        return timed

    counts = [await batch(BATCH), await batch(2 * BATCH)]
    # Timed: the first message always, then one in 1 to 31 (timing-sample 16): a batch
    # of 200 adds some, and never all.
    assert 1 <= counts[0] < counts[1] < 2 * BATCH
    assert stats.get("note", "failed") == 2 * BATCH // 10
    assert stats.get("note", "handled") == 2 * BATCH - 2 * BATCH // 10
    # Only the timed ones went through start (a Work each); the others were simple items.
    assert started == counts[1]
