"""The node's own spans: app spans nest under them, an unsampled trace records nothing
but passes its context on, both export paths write the same line, a stored message
keeps its sender's trace; and handshakes this node dialled are counted when they fail."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from p2phost._observability import MetricsSettings
from p2phost._observability._context import SENDING, attach_passing
from p2phost._observability._jsonl import span_line
from p2phost._observability._spans import (
    JsonLinesExporter,
    Spec,
    exception_event,
    flat,
    readable,
)
from p2phost._runtime.messaging._dispatch import Dispatcher
from p2phost_sdk import App, Identity, Message, PeerUnavailable, handler
from p2phost_sdk.testing.discovery import wait_until
from tests.conftest import run_cli, service_or_skip
from tests.observe.test_metrics import scrape, total
from tests.observe.test_traces import otel_env, spans
from tests.runtime.conftest import MakeNode
from tests.runtime.conftest import make_node as make_node  # the fixture
from tests.runtime.processes import RunningNode

#: The app's own tracer: a provider of its own (the global one can be set only once).
APP_SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(APP_SPANS))
APP_TRACER = _provider.get_tracer("the app")


class Seeing(App):
    """Records the span context its handler runs in, and makes a span of its own."""

    name = "seeing"

    def __init__(self) -> None:
        self.contexts: list[SpanContext] = []
        #: The context of the span the handler made (recorded or not).
        self.work: list[SpanContext] = []

    @handler("look")
    async def look(self, message: Message) -> None:
        self.contexts.append(trace.get_current_span().get_span_context())
        with APP_TRACER.start_as_current_span("app work") as work:
            self.work.append(work.get_span_context())


async def test_app_spans_nest_under_the_handler_and_parent_the_nodes_sends(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spans.jsonl"
    otel_env(monkeypatch, path)
    APP_SPANS.clear()
    app = Seeing()
    receiver = await make_node([app])
    sender = await make_node([])
    peer = await sender.connect(receiver.addresses[0])
    with APP_TRACER.start_as_current_span("app sends") as around:
        await sender.send(peer, "look", "x")
    await wait_until(lambda: app.contexts, 10, "the message handled")
    await sender.close()
    await receiver.close()
    found = {s["name"]: s for s in spans(path)}
    mine = {s.name: s for s in APP_SPANS.get_finished_spans()}
    sent, handled = found["send look"], found["handle look"]
    assert sent["parent_id"] == f"0x{around.get_span_context().span_id:016x}"
    assert sent["context"]["trace_id"] == f"0x{around.get_span_context().trace_id:032x}"
    assert found["receive look"]["parent_id"] == sent["context"]["span_id"]
    assert handled["parent_id"] == found["receive look"]["context"]["span_id"]
    work = mine["app work"]
    assert work.parent is not None
    assert f"0x{work.parent.span_id:016x}" == handled["context"]["span_id"]
    assert f"0x{work.context.trace_id:032x}" == sent["context"]["trace_id"]


def contexts_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, SpanContext]]:
    """The (sending peer, context) of each traced frame the nodes of this process take
    from the wire, in order."""
    seen: list[tuple[str, SpanContext]] = []
    taken = Dispatcher.received_traced

    def spy(self: Dispatcher, channel: Any, *fields: Any) -> Any:
        data = fields[-1]
        seen.append((channel.peer_id, SpanContext(
            int.from_bytes(data[:16]), int.from_bytes(data[16:24]), True,
            TraceFlags(data[24]))))
        return taken(self, channel, *fields)

    monkeypatch.setattr(Dispatcher, "received_traced", spy)
    return seen


async def test_an_unsampled_trace_records_nothing_and_passes_its_context_on(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A message whose trace is not sampled costs its receiver no span machinery: its
    # handler runs bare, and what the handler sends carries the sender's context on,
    # still not sampled. App code there still sees the sender's span as the current span
    # (OpenTelemetry's semantics): a span it starts is in that trace, and not recorded.
    path = tmp_path / "spans.jsonl"
    otel_env(monkeypatch, path)
    APP_SPANS.clear()
    wire = contexts_in(monkeypatch)
    last, middle = Seeing(), Relaying()
    end = await make_node([last])
    relay = await make_node([middle])
    sender = await make_node([])
    middle.onward = (relay, await relay.connect(end.addresses[0]))
    peer = await sender.connect(relay.addresses[0])
    # The caller's trace is not sampled (as a parent-based sampler decided upstream).
    unsampled = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.DEFAULT))
    with trace.use_span(NonRecordingSpan(unsampled)):
        await sender.send(peer, "relay", "x")
    await wait_until(lambda: last.contexts, 10, "the message relayed")
    for node in (sender, relay, end):
        await node.close()
    first, then = (context for _, context in wire)
    assert (first.trace_id, first.span_id) == (0xABC, 0xDEF)
    assert then.trace_id == 0xABC and not then.trace_flags.sampled
    assert not path.exists() or not spans(path)
    # Each hop's handler: its sender's span is current, a remote parent not sampled.
    assert (middle.contexts[0].trace_id, middle.contexts[0].span_id) == (0xABC, 0xDEF)
    assert (last.contexts[0].trace_id, last.contexts[0].span_id) == (0xABC, then.span_id)
    for seen in (middle.contexts[0], last.contexts[0], *middle.work, last.work[0]):
        assert seen.is_valid and not seen.trace_flags.sampled
    assert middle.contexts[0].is_remote and last.contexts[0].is_remote
    # The app's spans: children in the sender's trace, not recorded (no orphan roots).
    assert [w.trace_id for w in (*middle.work, *last.work)] == [0xABC, 0xABC]
    assert not APP_SPANS.get_finished_spans()


class Relaying(Seeing):
    """Records its span context and sends each message on to ``onward``."""

    onward: tuple[Any, str] | None = None

    @handler("relay")
    async def relay(self, message: Message) -> None:
        self.contexts.append(trace.get_current_span().get_span_context())
        assert self.onward is not None
        node, peer = self.onward
        with APP_TRACER.start_as_current_span("app relay") as work:
            self.work.append(work.get_span_context())
        await node.send(peer, "look", message.body)


async def test_a_new_trace_not_sampled_passes_one_context_on_across_hops(
        make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A sampler that samples no new trace: a send records nothing and sets no context,
    # its frame carries a new unsampled context, which the next hops pass on as it is.
    path = tmp_path / "spans.jsonl"
    otel_env(monkeypatch, path)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    wire = contexts_in(monkeypatch)
    APP_SPANS.clear()
    last, middle = Seeing(), Relaying()
    end = await make_node([last])
    relay = await make_node([middle])
    sender = await make_node([])
    middle.onward = (relay, await relay.connect(end.addresses[0]))
    peer = await sender.connect(relay.addresses[0])
    for _ in range(40):  # about half of them new traces not sampled
        await sender.send(peer, "relay", "x")
    await wait_until(lambda: len(last.contexts) == 40, 10, "the messages relayed")
    for node in (sender, relay, end):
        await node.close()
    found = spans(path)
    recorded = {int(s["context"]["trace_id"], 16) for s in found}
    hops = [[c for p, c in wire if p == node.peer_id] for node in (sender, relay)]
    assert [len(hop) for hop in hops] == [40, 40]  # each hop carried a context
    unsampled = [(first, then) for first, then in zip(*hops, strict=True)
                 if not first.trace_flags.sampled]
    assert 5 < len(unsampled) < 35
    for first, then in unsampled:
        assert first.is_valid and then.trace_id == first.trace_id
        assert not then.trace_flags.sampled and first.trace_id not in recorded
        # Its lower half says "not sampled" to a ratio sampler downstream too.
        assert first.trace_id & (2**64 - 1) >= 2**63
    mine = APP_SPANS.get_finished_spans()
    handles = {int(s["context"]["span_id"], 16) for s in found if s["name"].startswith("handle")}
    for (first, then), seen, at_end in zip(zip(*hops, strict=True), middle.contexts,
                                           last.contexts, strict=True):
        # Its handlers' current span is in the trace, at both hops, sampled or not.
        assert seen.trace_id == at_end.trace_id == first.trace_id
        assert seen.trace_flags.sampled == at_end.trace_flags.sampled \
            == first.trace_flags.sampled
        if first.trace_flags.sampled:  # the sampled ones: one trace of 6 spans each
            assert then.trace_flags.sampled and then.trace_id == first.trace_id
            assert sum(int(s["context"]["trace_id"], 16) == first.trace_id
                       for s in found) == 6
            # The app's spans at both hops: recorded, children of the handle spans.
            ours = [s for s in mine if s.context.trace_id == first.trace_id]
            assert sorted(s.name for s in ours) == ["app relay", "app work"]
            assert all(s.parent is not None and s.parent.span_id in handles for s in ours)
        else:
            assert (seen.span_id, at_end.span_id) == (first.span_id, then.span_id)
    # The app's spans in traces not sampled: in their trace, none recorded.
    assert len(mine) == 2 * (40 - len(unsampled))
    for work in (*middle.work, *last.work):
        assert work.trace_id in {first.trace_id for first in hops[0]}


def test_the_jsonl_line_of_a_record_is_the_sdk_line_of_its_span(tmp_path: Path) -> None:
    spec = Spec('receive "odd" 100% topic', SpanKind.CONSUMER,
                {"messaging.system": "p2phost", "p2phost.peer": "12D3"}, remote_parent=True)
    error = ("ValueError: no", exception_event(ValueError("no")), 1_764_000_000_500_000_000)
    trace = (0xABC).to_bytes(16)
    records: list[Any] = [
        # A receipt with its handler's span inside (failed), and a reply at other times.
        (spec, trace + (1).to_bytes(8), (2).to_bytes(8), 1_764_000_000_123_456_000,
         1_764_000_001_000_001_000, ("ValueError: no", None, 0), 0xFF, 2,
         Spec("handle t", SpanKind.INTERNAL, {}), (3).to_bytes(8),
         1_764_000_000_123_456_000, 1_764_000_001_000_001_000, error,
         Spec("reply t", SpanKind.INTERNAL, {}), (4).to_bytes(8),
         1_764_000_001_000_000_000, 1_764_000_001_000_001_000),
        # A send, and a receipt of a message whose id is not a number (its specs numbered).
        (Spec("send t", SpanKind.PRODUCER, {"a": "%s"}), trace + (5).to_bytes(8), b"",
         1_764_000_000_000_000_000, 1_764_000_000_000_001_000, None),
        (0, trace + (6).to_bytes(8), (5).to_bytes(8), 1_764_000_000_000_002_000,
         1_764_000_000_000_003_000, None, "not-hex", 1, 1, (7).to_bytes(8),
         1_764_000_000_000_002_000, 1_764_000_000_000_003_000, None),
    ]
    numbered = [Spec("receive t", SpanKind.CONSUMER, {}, remote_parent=True),
                Spec("handle t", SpanKind.INTERNAL, {})]
    exporter = JsonLinesExporter(str(tmp_path / "records.jsonl"))
    exporter.export_records(records, "svc", numbered)
    exporter.shutdown()
    ours = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    resource = Resource.create({"service.name": "svc"})
    sdk = [json.loads(span_line(readable(span, resource, InstrumentationScope("p2phost"))))
           for record in records for span in flat(record, numbered)]
    assert ours == sdk
    assert [s["name"] for s in ours] == ['receive "odd" 100% topic', "handle t", "reply t",
                                         "send t", "receive t", "handle t"]
    assert ours[4]["attributes"]["messaging.message.id"] == "not-hex"
    assert ours[5]["parent_id"] == ours[4]["context"]["span_id"]
    assert ours[0]["attributes"]["p2phost.attempt"] == 2
    assert ours[0]["attributes"]["messaging.message.id"] == "00000000000000ff"
    assert ours[1]["events"][0]["name"] == "exception"
    assert {s["parent_id"] for s in ours[1:3]} == {ours[0]["context"]["span_id"]}
    assert ours[0]["parent_id"] == f"0x{2:016x}" and ours[3]["parent_id"] is None


@pytest.mark.slow
def test_the_common_records_lines_are_the_sdk_lines_of_their_spans(tmp_path: Path) -> None:
    # Records that nothing failed in, specs by number, times in one second and across
    # the next: the exporter's quick path, and its way back to the general one. (Times
    # in whole microseconds: the SDK rounds a float, the exporter truncates.)
    numbered = [Spec("send t", SpanKind.PRODUCER, {"messaging.system": "p2phost"}),
                Spec("receive t", SpanKind.SERVER, {"p2phost.peer": "12D3"},
                     remote_parent=True),
                Spec("handle t", SpanKind.INTERNAL, {}), Spec("reply t", SpanKind.INTERNAL, {})]
    trace, second = (0xABC).to_bytes(16), 1_764_000_000_000_000_000
    records: list[Any] = []
    for n, at in enumerate((5_000, 7_123_000, 999_999_000, 999_998_000, 1_000_000_000,
                            1_000_003_000)):
        start = second + at
        records += [
            (0, trace + (10 * n + 1).to_bytes(8), b"" if n % 2 else (9).to_bytes(8), start,
             start + 1_000, None),
            # A one-way message's receipt (its handle span at the same times) ...
            (1, trace + (10 * n + 2).to_bytes(8), (10 * n + 1).to_bytes(8), start + 10,
             start + 2_000, None, 0xF << (4 * n), n + 1, 2, (10 * n + 3).to_bytes(8),
             start + 10, start + 2_000, None),
            # ... and a request's, with its handle span inside and its reply after.
            (1, trace + (10 * n + 4).to_bytes(8), (10 * n + 1).to_bytes(8), start + 10,
             start + 9_000, None, 2**63 + n, 1, 2, (10 * n + 5).to_bytes(8), start + 10,
             start + 5_000, None, 3, (10 * n + 6).to_bytes(8), start + 5_100, start + 9_000),
        ]
    exporter = JsonLinesExporter(str(tmp_path / "records.jsonl"))
    exporter.export_records(records[:9], "svc", numbered)
    exporter.export_records(records[9:], "svc", numbered)
    exporter.shutdown()
    ours = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    resource = Resource.create({"service.name": "svc"})
    sdk = [json.loads(span_line(readable(span, resource, InstrumentationScope("p2phost"))))
           for record in records for span in flat(record, numbered)]
    assert ours == sdk and len(ours) == 36
    assert ours[1]["attributes"]["messaging.message.id"] == "000000000000000f"


def test_a_stored_message_keeps_its_senders_trace(
        make_project: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    service_or_skip("Redis", 6379)
    medium = "redis://127.0.0.1:6379/0"
    files = {name: tmp_path / f"{name}.jsonl" for name in "ab"}
    b_root = make_project(["redis-transport", "json-codec", "echo"], name="b", listen=[medium])
    b_id = run_cli("id", cwd=b_root).stdout.strip()
    a_root = make_project(["redis-transport", "json-codec"], name="a", listen=[])
    done = run_cli("send", f"{medium}#{b_id}", "echo", '"stored"', cwd=a_root,
                   env=otel_env(monkeypatch, files["a"]), timeout=60)
    assert done.returncode == 0 and "stored for" in done.stdout + done.stderr, done.stderr
    otel_env(monkeypatch, files["b"])
    b = RunningNode(b_root)  # B runs only now, and takes the stored message
    try:
        wait_until_sync(lambda: files["b"].exists() and any(
            s["name"] == "receive echo" for s in spans(files["b"])), 30)
    finally:
        assert b.stop() == 0, b.stderr
    (sent,) = [s for s in spans(files["a"]) if s["name"] == "send echo"]
    (received,) = [s for s in spans(files["b"]) if s["name"] == "receive echo"]
    assert received["context"]["trace_id"] == sent["context"]["trace_id"]
    assert received["parent_id"] == sent["context"]["span_id"]


def wait_until_sync(condition: Callable[[], bool], timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the stored message's spans did not appear"
        time.sleep(0.1)


async def test_a_handshake_this_node_dialled_is_counted_when_it_fails(
        make_node: MakeNode) -> None:
    receiver = await make_node([])
    sender = await make_node([], metrics=MetricsSettings(listen="127.0.0.1:0"))
    assert sender.metrics is not None
    with pytest.raises(PeerUnavailable, match="handshake failed"):
        await sender.connect(receiver.addresses[0],
                             expected_peer_id=Identity.generate().peer_id)
    got = await asyncio.to_thread(scrape, sender.metrics.address)  # the loop answers it
    assert total(got, "p2phost_handshake_failures_total", side="dialled",
                 reason="wrong-peer") == 1
    assert sender.stats()["connections"]["failed_handshakes"] == 1
    assert os.environ.get("OTEL_TRACES_EXPORTER") is None  # nothing leaks between tests


def test_a_peers_trace_context_with_a_zero_id_or_the_wrong_size_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from p2phost._observability._otel import Tracing

    otel_env(monkeypatch, tmp_path / "spans.jsonl")
    tracing = Tracing("t")
    try:
        good = bytes(range(1, 26))  # trace id, span id, flags
        tracing.incoming("p", 1, good)
        tracing.incoming("p", 2, bytes(16) + good[16:])  # zero trace id (W3C: invalid)
        tracing.incoming("p", 3, good[:16] + bytes(8) + b"\x01")  # zero span id
        tracing.incoming("p", 4, good[:24])  # truncated
        assert list(tracing._parents) == [("p", 1)]
    finally:
        tracing._batcher.shutdown()


class Messenger:
    """What a traced send wraps: notes each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, str | None]] = []

    async def send(self, peer: str, topic: str, body: Any, *, key: str | None = None) -> None:
        self.calls.append((peer, topic, body, key))


async def test_the_send_wrapper_passes_keys_and_named_arguments_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The positional fast path of a traced send forwards exactly what the app gave it,
    # whether the send is recorded (always_on) or not (always_off).
    from p2phost._observability._otel import Tracing

    for sampler in ("parentbased_always_on", "parentbased_always_off"):
        otel_env(monkeypatch, tmp_path / f"{sampler}.jsonl")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
        messenger = Messenger()
        tracing = Tracing("t")
        try:
            send = tracing._sending("send", SpanKind.PRODUCER, messenger.send)
            await send("p", "t", 1)
            await send("p", "t", 2, key="k")
            await send(peer="p", topic="t", body=3, key="k")
        finally:
            await tracing.close()
        assert messenger.calls == [("p", "t", 1, None), ("p", "t", 2, "k"),
                                   ("p", "t", 3, "k")]
        recorded = spans(tmp_path / f"{sampler}.jsonl") \
            if (tmp_path / f"{sampler}.jsonl").exists() else []
        assert [s["name"] for s in recorded] == (["send t"] * 3 if "on" in sampler else [])


def test_the_nodes_context_makes_a_passed_on_span_current_only_when_asked() -> None:
    # _context.Passing, as OpenTelemetry's API reads it: get_current_span (get), a value
    # set on it (copy: a plain Context that keeps the span), a task's copy of it, a span
    # started in it; with no SENDING, no span.
    def body() -> None:
        attach_passing()
        assert not trace.get_current_span().get_span_context().is_valid
        token = SENDING.set((0xABC).to_bytes(16, "big") + (0xDEF).to_bytes(8, "big") + b"\0")
        span = trace.get_current_span()
        seen = span.get_span_context()
        assert (seen.trace_id, seen.span_id, seen.is_remote, seen.trace_flags.sampled) \
            == (0xABC, 0xDEF, True, False)
        assert trace.get_current_span() is span  # the same span each time it is asked
        with_baggage = baggage.set_baggage("k", "v")
        assert type(with_baggage) is Context and trace.get_current_span(with_baggage) is span

        async def in_a_task() -> int:
            return trace.get_current_span().get_span_context().trace_id

        assert asyncio.run(in_a_task()) == 0xABC
        APP_SPANS.clear()
        with APP_TRACER.start_as_current_span("app work") as work:
            assert work.get_span_context().trace_id == 0xABC and not work.is_recording()
        assert not APP_SPANS.get_finished_spans()
        SENDING.reset(token)
        assert not trace.get_current_span().get_span_context().is_valid

    contextvars.copy_context().run(body)
