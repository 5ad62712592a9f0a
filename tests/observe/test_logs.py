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
from p2phost._runtime import Node
from p2phost_sdk import App, Delivery, Message, handler
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


async def json_flood(make_node: MakeNode, out: io.StringIO, app: App, topic: str,
                     counter: str) -> tuple[list[dict[str, Any]], Node]:
    """A node ``alice`` running ``app`` takes FAILURES messages on ``topic`` from a peer,
    counts each under ``counter``, and closes: its JSON lines, and the sender."""
    bind(node="alice")
    receiver = await make_node([app])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    for i in range(FAILURES):
        await sender.send(peer, topic, i)
    await wait_until(lambda: receiver.delivery.stats.get(topic, counter) == FAILURES, 10,
                     f"every message counted as {counter}")
    await receiver.close()  # reports what was held back
    return [json.loads(line) for line in out.getvalue().splitlines()], sender


async def test_json_lines_name_the_message_and_repeats_are_counted(
        make_node: MakeNode, json_logs: tuple[io.StringIO, RepeatLimit, Clock]) -> None:
    lines, sender = await json_flood(make_node, json_logs[0], Failing(), "fail", "failed")
    # One peer, one topic: its first failure in full (traceback too), the rest counted.
    (failed,) = [li for li in lines if li["message"].startswith("the 'fail' handler failed")]
    assert failed["node"] == "alice" and failed["level"] == "warning"
    assert failed["peer"] == sender.peer_id and failed["topic"] == "fail"
    assert len(failed["message_id"]) == 16 and failed["message_id"] in failed["message"]
    assert "ValueError: no 0" in failed["exc"]
    (summary,) = [li for li in lines if "were not logged" in li["message"]]
    assert summary["message"].startswith(
        f"{FAILURES - 1} more handler failures ({sender.peer_id}, fail) in the last 10s")
    assert summary["message"].endswith(f"({FAILURES} in all)")


async def test_a_library_nodes_repeated_warnings_are_counted_too(
        make_node: MakeNode, caplog: pytest.LogCaptureFixture) -> None:
    # No handler of the root logger limits repeats here (as in an app that logs its
    # own way): the node puts the limit on p2phost's loggers when it starts.
    caplog.set_level(logging.WARNING)
    receiver = await make_node([Failing()])
    senders = [await make_node([]) for _ in range(2)]
    many = 25
    for sender in senders:  # the second's failures are not hidden by the first's flood
        peer = await sender.connect(receiver.addresses[0])
        for i in range(many):
            await sender.send(peer, "fail", i)
    await wait_until(lambda: receiver.delivery.stats.get("fail", "failed") == 2 * many, 10,
                     "every message failed")
    await receiver.close()  # reports what was held back
    for sender in senders:
        failed = [r for r in caplog.records if r.getMessage().startswith("the 'fail' handler")
                  and sender.peer_id in r.getMessage()]
        summaries = [r.getMessage() for r in caplog.records
                     if r.getMessage().startswith(f"{many - 1} more handler failures "
                                                  f"({sender.peer_id}, fail)")]
        assert len(failed) == 1 and len(summaries) == 1, (len(failed), summaries)


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


def test_lines_a_rate_limited_log_limited_pass_the_repeat_limit() -> None:
    limit = RepeatLimit(burst=1)
    record = logging.LogRecord("p2phost.node", logging.WARNING, __file__, 1, "failed %s",
                               ("x",), None)
    assert limit.filter(record) and not limit.filter(record)  # the template's burst: 1
    record.rate_limited = True  # as a RateLimitedLog marks its lines
    assert limit.filter(record)


class FailingAcked(App):
    name = "failing-acked"

    @handler("dead", delivery=Delivery("at-least-once", immediate_retries=0,
                                       delayed_retries=0))
    async def dead(self, message: Message) -> None:
        raise ValueError(f"no {message.body}")


async def test_json_dead_letter_lines_name_the_message_and_are_counted(
        make_node: MakeNode, json_logs: tuple[io.StringIO, RepeatLimit, Clock]) -> None:
    lines, sender = await json_flood(make_node, json_logs[0], FailingAcked(), "dead",
                                     "dead_lettered")
    # Logged when its commit is done, outside the handler: the line names it all the same.
    (dead,) = [li for li in lines if "went to the dead-letter store" in li["message"]]
    assert dead["node"] == "alice" and dead["level"] == "error"
    assert dead["peer"] == sender.peer_id and dead["topic"] == "dead"
    assert dead["message_id"] in dead["message"]
    (failed,) = [li for li in lines if li["message"].startswith("the 'dead' handler failed")]
    assert failed["message_id"] == dead["message_id"] and "ValueError: no 0" in failed["exc"]
    counts = sorted(li["message"] for li in lines if "were not logged" in li["message"])
    assert counts == [
        f"{FAILURES - 1} more dead letters ({sender.peer_id}, dead) in the last 10s were not "
        f"logged ({FAILURES} in all)",
        f"{FAILURES - 1} more handler failures ({sender.peer_id}, dead) in the last 10s were "
        f"not logged ({FAILURES} in all)"]
