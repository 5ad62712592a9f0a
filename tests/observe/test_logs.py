"""``--log-format json``: one object per line naming the node, peer, topic and message id
of the message being handled; repeated warnings are held back and reported with a count."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from p2phost._observability._logs import JsonFormatter, RepeatLimit, bind
from p2phost_sdk import App, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.observe.conftest import send_burst
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture

FAILURES = 12


class Failing(App):
    name = "failing"

    @handler("fail")
    async def fail(self, message: Message) -> None:
        raise ValueError(f"no {message.body}")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def json_logs() -> Iterator[tuple[io.StringIO, RepeatLimit, Clock]]:
    out, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    limit = RepeatLimit(burst=3, window=10.0, clock=clock)
    handler.addFilter(limit)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out, limit, clock
    finally:
        root.removeHandler(handler)


async def test_json_lines_name_the_message_and_repeats_are_counted(
        make_node: MakeNode, json_logs: tuple[io.StringIO, RepeatLimit, Clock]) -> None:
    out, limit, clock = json_logs
    bind(node="alice")
    receiver = await make_node([Failing()])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    for i in range(FAILURES):
        await sender.send(peer, "fail", i)
    await wait_until(lambda: receiver.delivery.stats.get("fail", "failed") == FAILURES, 10,
                     "every message failed")
    clock.now += 11
    limit.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [li for li in lines if li["message"].startswith("the 'fail' handler failed")]
    assert len(failed) == 3, lines
    for line in failed:
        assert line["node"] == "alice" and line["level"] == "warning"
        assert line["peer"] == sender.peer_id and line["topic"] == "fail"
        assert len(line["message_id"]) == 16
    (summary,) = [li for li in lines if "were not logged" in li["message"]]
    assert summary["message"].startswith(f"{FAILURES - 3} more warnings like")


async def test_a_library_nodes_repeated_warnings_are_counted_too(
        make_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    # No handler of the root logger limits repeats here (as in an app that logs its
    # own way): the node puts the limit on p2phost's loggers when it starts.
    caplog.set_level(logging.WARNING)
    receiver = await make_node([Failing()])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    many = 25
    for i in range(many):
        await sender.send(peer, "fail", i)
    await wait_until(lambda: receiver.delivery.stats.get("fail", "failed") == many, 10,
                     "every message failed")
    await receiver.close()  # reports what was held back
    failed = [r for r in caplog.records if r.getMessage().startswith("the 'fail' handler")]
    summaries = [r for r in caplog.records if "were not logged" in r.getMessage()
                 and "handler failed" in r.getMessage()]
    # At most 10 of a kind in 10 s (fewer if an earlier test's failures share the window).
    assert len(failed) <= 10, len(failed)
    assert sum(getattr(r, "repeated", 0) for r in summaries) >= many - len(failed)


class Noting(App):
    """Logs a line naming what it handles, then binds a field of its own."""

    name = "noting"

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any] | None] = set()
        self.handled = 0

    @handler("note")
    async def note(self, message: Message) -> None:
        self.tasks.add(asyncio.current_task())
        _notes.info("note %s", message.body)
        bind(mine=str(message.body))  # must not reach the next message's lines
        await asyncio.sleep(0)  # the next items queue behind this one
        self.handled += 1


_notes = logging.getLogger("tests.observe.notes")


async def test_json_context_is_reset_after_each_message_and_a_burst_shares_tasks(
        make_node: MakeNode, json_logs: tuple[io.StringIO, RepeatLimit, Clock]) -> None:
    out, _, _ = json_logs
    _notes.setLevel(logging.INFO)
    app = Noting()
    burst = 200
    sender = await send_burst(make_node, app, burst, lambda: app.handled)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    notes = [li for li in lines if li["logger"] == "tests.observe.notes"]
    assert len(notes) == burst
    for line in notes:
        assert line["topic"] == "note" and line["peer"] == sender.peer_id
        assert "mine" not in line, line  # the previous handler's binding did not leak
    # The dispatcher's binding is reset after each message, so the mailbox runs a
    # peer's queued messages in a row in one task rather than one task each.
    assert len(app.tasks) < burst // 4, len(app.tasks)
