"""Traces across three ``p2phost`` processes: A asks B over tcp, B's handler asks C over
Redis; each exports its spans to a file, and the spans of the one request share one trace
id and nest in order. Without OpenTelemetry nothing imports it and the node runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit
from prometheus_client.parser import text_string_to_metric_families

from p2phost._runtime import Kind, WireError, decode, encode
from p2phost._runtime.wire._envelope import HEADER, TRACE_SIZE, TRACED
from p2phost_sdk import App, Message, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.conftest import build_wheels, run_cli, service_or_skip
from tests.observe.conftest import send_burst
from tests.observe.test_metrics import Caller, Worker
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture
from tests.runtime.processes import RunningNode

FORWARDER = Path(__file__).resolve().parent / "plugins" / "forwarder"


def otel_env(monkeypatch: pytest.MonkeyPatch, path: Path) -> dict[str, str]:
    env = {"OTEL_TRACES_EXPORTER": "jsonl", "P2PHOST_TRACES_FILE": str(path),
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # RunningNode starts with os.environ
    return env


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def add_to_manifest(root: Path, **node: Any) -> None:
    manifest = root / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    for key, value in node.items():
        doc["node"][key] = value  # type: ignore[index]
    manifest.write_text(tomlkit.dumps(doc))


@pytest.mark.slow
def test_one_request_is_one_trace_across_three_nodes(
        make_project: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    service_or_skip("Redis", 6379)
    forwarder = build_wheels([FORWARDER], tmp_path / "wheels")["forwarder"]
    files = {name: tmp_path / f"{name}.jsonl" for name in "abc"}
    otel_env(monkeypatch, files["c"])
    c_root = make_project(["redis-transport", "json-codec", "echo"], name="c",
                          listen=["redis://127.0.0.1:6379/0"])
    with (c_root / "p2phost.toml").open("a") as manifest:
        manifest.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    c = RunningNode(c_root)
    try:
        otel_env(monkeypatch, files["b"])
        b_root = make_project(["tcp-transport", "redis-transport", "json-codec", "forwarder"],
                              name="b", extra_wheels=[forwarder],
                              listen=["tcp://127.0.0.1:0", "redis://127.0.0.1:6379/0"],
                              config={"forwarder": {"to": c.address}})
        add_to_manifest(b_root, connect=[c.address])
        b = RunningNode(b_root)
        try:
            a_root = make_project(["tcp-transport", "json-codec"], name="a", listen=[])
            done = run_cli("send", b.address, "forward", '"hello"', "--request",
                           cwd=a_root, env=otel_env(monkeypatch, files["a"]), timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "hello" in done.stdout
            # C's inbox on Redis is in its metrics (what `p2phost inbox stats` shows)
            metrics = c.wait_for("metrics on ").split()[-1]
            text = httpx.get(metrics, timeout=10).text
            waiting = [s for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "p2phost_inbox_records"]
            assert [s.labels["medium"] for s in waiting] == ["redis://127.0.0.1:6379/0"]
            assert waiting[0].value >= 0
        finally:
            assert b.stop() == 0, b.stderr
    finally:
        assert c.stop() == 0, c.stderr

    by_node = {name: spans(path) for name, path in files.items()}
    everything = [s for found in by_node.values() for s in found]
    (root,) = [s for s in by_node["a"] if s["name"] == "request forward"]
    trace_id = root["context"]["trace_id"]
    ours = {s["name"]: s for s in everything if s["context"]["trace_id"] == trace_id}
    chain = ["request forward", "receive forward", "handle forward", "request echo",
             "receive echo", "handle echo"]
    assert set(chain) | {"reply echo", "reply forward"} <= set(ours), sorted(ours)
    for parent, child in itertools.pairwise(chain):
        assert ours[child]["parent_id"] == ours[parent]["context"]["span_id"], (parent, child)
        assert ours[child]["start_time"] >= ours[parent]["start_time"], (parent, child)
    assert ours["reply echo"]["parent_id"] == ours["receive echo"]["context"]["span_id"]
    assert ours["reply forward"]["parent_id"] == ours["receive forward"]["context"]["span_id"]
    assert ours["reply echo"]["start_time"] >= ours["handle echo"]["end_time"]
    assert ours["receive forward"]["end_time"] >= ours["reply forward"]["end_time"]
    assert {s["name"] for s in by_node["c"]} >= {"receive echo", "handle echo", "reply echo"}


def test_without_opentelemetry_nothing_imports_it_and_the_node_runs(
        make_project: Callable[..., Path], tmp_path: Path) -> None:
    root = make_project(["tcp-transport", "json-codec", "echo"], name="plain")
    script = textwrap.dedent("""
        import asyncio, sys
        from importlib.abc import MetaPathFinder

        class Uninstalled(MetaPathFinder):  # as if the otel extra were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Uninstalled())
        from p2phost._project import Project
        from p2phost._runtime.node._assemble import node_for_project

        async def main():
            async with node_for_project(Project.find()) as node:
                client = node_for_project(Project.find(), client=True)
                async with client:
                    assert await client.request(node.addresses[0], "echo", "hi") == "hi"
            assert not [m for m in sys.modules if m.startswith("opentelemetry")]
            print("ran without opentelemetry")

        asyncio.run(main())
    """)
    for exporter in ("", "jsonl"):  # asked for or not, it is not there
        done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, "OTEL_TRACES_EXPORTER": exporter})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ran without opentelemetry" in done.stdout
        if exporter:
            assert "OpenTelemetry is not installed" in done.stderr


async def test_a_retried_and_dead_lettered_message_stays_in_its_senders_trace(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spans.jsonl"
    otel_env(monkeypatch, path)
    receiver = await make_node([Worker()], drain_timeout=3.0)
    sender = await make_node([Caller()])
    peer = await sender.connect(receiver.addresses[0])
    await sender.send(peer, "poison", "x")
    await wait_until(lambda: receiver.delivery.stats.get("poison", "dead_lettered") == 1, 20,
                     "the message dead-lettered")
    await sender.close()
    await receiver.close()
    found = spans(path)
    (sent,) = [s for s in found if s["name"] == "send poison"]
    runs = sorted((s for s in found if s["name"] == "receive poison"),
                  key=lambda s: s["attributes"]["p2phost.attempt"])
    assert [s["attributes"]["p2phost.attempt"] for s in runs] == [1, 2]  # tried, retried
    for run in runs:
        assert run["context"]["trace_id"] == sent["context"]["trace_id"]
        assert run["parent_id"] == sent["context"]["span_id"]
        assert run["status"]["status_code"] == "ERROR"
        (handled,) = [s for s in found if s["name"] == "handle poison"
                      and s["parent_id"] == run["context"]["span_id"]]
        assert handled["events"][0]["name"] == "exception"


def test_the_trace_field_round_trips_and_a_truncated_one_is_refused() -> None:
    context = bytes(range(1, TRACE_SIZE + 1))
    frame = encode(Kind.REQUEST, 7, b"topic", b"body", trace=context)
    assert frame[1] == Kind.REQUEST | TRACED
    envelope = decode(frame)
    assert (envelope.kind, envelope.topic, envelope.body, envelope.trace) == (
        Kind.REQUEST, "topic", b"body", context)
    assert decode(envelope.to_frame()) == envelope
    assert decode(encode(Kind.MESSAGE, 7, b"topic", b"body")).trace == b""
    with pytest.raises(WireError, match="longer than the frame"):
        decode(frame[:HEADER.size + len(b"topic") + TRACE_SIZE - 1])
    with pytest.raises(WireError, match="unknown envelope kind"):
        decode(bytes([1, TRACED | 15]) + frame[2:])


async def test_a_peer_that_does_not_trace_gets_no_trace_context(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = await make_node([Worker()])  # as an older peer: its hello says nothing of traces
    seen: list[bytes] = []
    on_message = plain._dispatch.on_message

    def recording(channel: Any, envelope: Any, ack: Any) -> Any:
        seen.append(envelope.trace)
        return on_message(channel, envelope, ack)

    monkeypatch.setattr(plain._dispatch, "on_message", recording)
    received = plain._dispatch.received

    def fast(channel: Any, kind: int, *rest: Any) -> Any:
        seen.append(b"")  # the reader's fast path takes only frames without a trace context
        return received(channel, kind, *rest)

    monkeypatch.setattr(plain._dispatch, "received", fast)
    otel_env(monkeypatch, tmp_path / "spans.jsonl")
    traced = await make_node([])
    peer = await traced.connect(plain.addresses[0])
    assert await traced.request(peer, "work", 41) == 41
    assert seen == [b""]
    await traced.close()
    assert [s["name"] for s in spans(tmp_path / "spans.jsonl")] == ["request work"]


class Spanned(App):
    """Notes each message's task and the trace of OpenTelemetry's current span."""

    name = "spanned"

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any] | None] = set()
        self.traces: list[int] = []

    @handler("note")
    async def note(self, message: Message) -> None:
        # The otel extra: only where tracing is on. What this handler's sends carry: its
        # span's context (recorded), or its sender's (not recorded: no span is made).
        from p2phost._observability._context import current

        self.tasks.add(asyncio.current_task())
        self.traces.append(int.from_bytes(current()[:16]))
        await asyncio.sleep(0)  # the next items queue behind this one


@pytest.mark.parametrize("sampler", ["parentbased_always_on", "always_off"])
async def test_traced_messages_from_one_peer_share_tasks_and_each_has_its_own_span(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sampler: str) -> None:
    otel_env(monkeypatch, tmp_path / "spans.jsonl")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    app = Spanned()
    burst = 200
    await send_burst(make_node, app, burst, lambda: len(app.traces))
    # Each handler passes its own message's trace on (sampled or not), never the one
    # before.
    assert len(set(app.traces)) == burst and 0 not in app.traces
    # The handler's span is reset after each message, so the mailbox runs a peer's
    # queued messages in a row in one task rather than one task each.
    assert len(app.tasks) < burst // 4, len(app.tasks)


class Answering(Spanned):
    """Answers ``ask`` with its body, noting the task as :class:`Spanned` does."""

    @handler("ask")
    async def ask(self, message: Message) -> Any:
        self.tasks.add(asyncio.current_task())
        await asyncio.sleep(0)
        return message.body


async def test_traced_requests_share_tasks_and_each_receipt_holds_its_handle_and_reply(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spans.jsonl"
    otel_env(monkeypatch, path)
    app = Answering()
    receiver = await make_node([app])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    count = 60
    answers = await asyncio.gather(*(sender.request(peer, "ask", i) for i in range(count)))
    assert answers == list(range(count))
    # The request's receipt is reset after its reply: the queued ones share tasks.
    assert len(app.tasks) < count // 4, len(app.tasks)
    await sender.close()
    await receiver.close()
    found = spans(path)
    by_id = {s["context"]["span_id"]: s for s in found}
    receipts = [s for s in found if s["name"] == "receive ask"]
    assert len(receipts) == count
    assert len({s["context"]["trace_id"] for s in receipts}) == count
    for receipt in receipts:
        asked = by_id[receipt["parent_id"]]
        assert asked["name"] == "request ask"
        assert asked["context"]["trace_id"] == receipt["context"]["trace_id"]
        inside = {s["name"]: s for s in found
                  if s["parent_id"] == receipt["context"]["span_id"]}
        assert set(inside) == {"handle ask", "reply ask"}
        assert inside["reply ask"]["start_time"] >= inside["handle ask"]["end_time"]
        assert receipt["end_time"] >= inside["reply ask"]["end_time"]
        assert receipt["attributes"]["p2phost.attempt"] == 1
        assert len(receipt["attributes"]["messaging.message.id"]) == 16
