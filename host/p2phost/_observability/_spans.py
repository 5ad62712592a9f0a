"""Finished spans as plain tuples, exported in batches by a thread of their own.

The OpenTelemetry SDK's ``Span`` costs 9-15 µs of CPU to start and end (its locks,
attribute copies, the span processor), more than a whole p2phost message (about 4 µs).
The node's own spans (send, receive, handle, reply) are therefore recorded on the loop
as one tuple per message and side (:data:`Record`): a send is one span; a receipt is
the receive span with its handle (and reply) spans inside it, recorded once when the
message is done, with the ids as the bytes the envelope carries. This module's thread
expands a record into spans: SDK ``ReadableSpan`` objects for any exporter named by
``OTEL_TRACES_EXPORTER`` (otlp, console...), or for p2phost's ``jsonl`` exporter
straight into lines (``_jsonl``: a template per span name, no SDK object: building
``ReadableSpan`` objects costs more than the message). The thread's CPU is the
process's: the benchmark (benchmarks/observability.py) counts it.

Batching follows the standard ``OTEL_BSP_*`` variables (schedule delay, queue size,
batch size, counted in records); records beyond a full queue are dropped and their
spans counted, as the SDK's BatchSpanProcessor does.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeAlias

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ._jsonl import ExportFailed, JsonLinesExporter, TracingError

__all__ = ["Batcher", "JsonLinesExporter", "Record", "Spec", "TracingError", "exception_event",
           "exporters", "flat", "readable", "spans_in"]

log = logging.getLogger("p2phost.node")
#: Specs a batcher numbers at most (its callers cache theirs, 4096 each at most).
_SPECS = 65536
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class Spec:
    """What the spans of one name share (made once per topic and peer, not per span):
    name, kind, the attributes known before the message, whether the parent is remote,
    and for the jsonl exporter the line templates made from those."""

    __slots__ = ("attributes", "kind", "name", "pieces", "remote_parent")

    def __init__(self, name: str, kind: SpanKind, attributes: dict[str, Any],
                 remote_parent: bool = False) -> None:
        self.name, self.kind, self.attributes = name, kind, attributes
        self.remote_parent = remote_parent
        #: What :meth:`lines` made (None until then).
        self.pieces: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def lines(self, service: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The span's JSON line as its constant pieces, without and with the message's
        attributes, to put between: trace id, span id, parent, start, end, status[,
        message id, attempt], events (made once: the exporter joins them with an
        f-string, four times cheaper than a ``%`` template)."""
        if self.pieces is None:
            def dumped(value: Any) -> str:
                return json.dumps(value, default=str)

            attributes = dumped(self.attributes)[:-1]
            head = [f'{{"name": {dumped(self.name)}, "context": {{"trace_id": "0x',
                    '", "span_id": "0x', f'"}}, "kind": {dumped(str(self.kind))}, '
                    '"parent_id": ', ', "start_time": "', 'Z", "end_time": "',
                    'Z", "status": ']
            tail = '}, "events": ', f', "service": {dumped(service)}}}\n'
            message = (f"{attributes}, " if len(attributes) > 1 else "{") + \
                '"messaging.message.id": '
            self.pieces = ((*head, ', "attributes": ' + attributes + tail[0], tail[1]),
                           (*head, ', "attributes": ' + message, ', "p2phost.attempt": ',
                            tail[0], tail[1]))
        return self.pieces


#: A span ended with the error it failed with: (status description, the exception
#: event's attributes or None, the event's time in ns).
Error = tuple[str, "dict[str, Any] | None", int]
#: A record's spec: its number in the batcher's table (:meth:`Batcher.known`), or the
#: spec itself.
SpecRef: TypeAlias = "int | Spec"
#: What the loop records per message and side, one flat tuple: a send's span is
#: (spec, trace id and span id (16 + 8 bytes, as the envelope carries them), parent
#: span id (8 bytes; empty: none), start ns, end ns, error or None); a receipt's adds
#: (message number or id, attempt) and its handle span's (spec, span id, start, end,
#: error), and a request's receipt its reply span's (spec, span id, start, end): the
#: handle and reply spans are children of the receive span. One tuple of plain values
#: (the spec by its number) while nothing failed: the garbage collector stops tracking
#: it at its first look, and it counts once towards the next collection while it waits
#: for the exporter (a tuple per span and one for the message's id made the young
#: collections three times as frequent, and moved more of what a busy node holds to
#: the old generation, whose full collections cost a traced node a microsecond a
#: message).
Record = tuple[Any, ...]
#: One span of a record, ids as numbers (parent 0: none).
Flat = tuple[Spec, int, int, int, int, int, "tuple[int | str, int] | None", "Error | None"]


def exception_event(exc: BaseException) -> dict[str, Any]:
    """The attributes of the SDK's ``exception`` event (``Span.record_exception``)."""
    import traceback

    kind = type(exc)
    module = kind.__module__
    return {"exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins" else kind.__qualname__,
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
            "exception.escaped": "False"}


def message_id(number: int | str) -> str:
    """A record's message id as the attribute says it: 16 hex digits."""
    return format(number, "016x") if type(number) is int else str(number)


def spans_in(record: Record) -> int:
    """How many spans a record holds (1: a send, 2: a receipt, 3: with a reply)."""
    return 1 + (len(record) - 6) // 4


def flat(record: Record, specs: Sequence[Spec] = ()) -> Iterator[Flat]:
    """The spans of one record (its specs numbered in ``specs``): its own, then its
    children's."""
    def spec(ref: SpecRef) -> Spec:
        return specs[ref] if isinstance(ref, int) else ref

    ref, ids, parent, start, end, error = record[:6]
    trace_id, span_id = int.from_bytes(ids[:16]), int.from_bytes(ids[16:24])
    extra = None if len(record) == 6 else (record[6], record[7])
    yield (spec(ref), trace_id, span_id, int.from_bytes(parent) if parent else 0, start,
           end, extra, error)
    if len(record) > 6:
        ref, child_id, child_start, child_end, child_error = record[8:13]
        yield (spec(ref), trace_id, int.from_bytes(child_id), span_id, child_start,
               child_end, None, child_error)
    if len(record) > 13:
        ref, child_id, child_start, child_end = record[13:17]
        yield (spec(ref), trace_id, int.from_bytes(child_id), span_id, child_start,
               child_end, None, None)


def _attributes(spec: Spec, extra: tuple[int | str, int] | None) -> dict[str, Any]:
    if extra is None:
        return spec.attributes
    return {**spec.attributes, "messaging.message.id": message_id(extra[0]),
            "p2phost.attempt": extra[1]}


def readable(span: Flat, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """One span of a record as the SDK's exporters take it."""
    spec, trace_id, span_id, parent_id, start, end, extra, error = span
    status, events = Status(StatusCode.UNSET), ()
    if error is not None:
        status = Status(StatusCode.ERROR, error[0])
        if error[1] is not None:
            events = (Event("exception", error[1], error[2]),)  # type: ignore[assignment]
    return ReadableSpan(
        name=spec.name, context=SpanContext(trace_id, span_id, False, _SAMPLED),
        parent=SpanContext(trace_id, parent_id, spec.remote_parent, _SAMPLED)
        if parent_id else None,
        resource=resource, attributes=_attributes(spec, extra), events=events,
        kind=spec.kind, status=status, start_time=start, end_time=end,
        instrumentation_scope=scope)


def exporters() -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    found = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    out: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "jsonl":
            out.append(JsonLinesExporter())
        elif name in found:
            out.append(found[name].load()())
        else:
            raise TracingError(
                f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed (known: "
                f"{', '.join(sorted({'jsonl', *found}))}); fix: pip install "
                "opentelemetry-exporter-otlp for otlp")
    return out


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        log.warning("%s is not a number: using %d", name, default)
        return default


class Batcher:
    """Records queued by the loop (``add``: a deque append, safe across threads) and
    exported by a thread every ``OTEL_BSP_SCHEDULE_DELAY`` ms, or as soon as a batch of
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` is waiting."""

    def __init__(self, exporters: list[SpanExporter], resource: Resource,
                 scope: InstrumentationScope) -> None:
        self._exporters, self._resource, self._scope = exporters, resource, scope
        self._service = str(resource.attributes.get("service.name", ""))
        self._delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self._max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self._max_queue)
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopping = False
        self._busy = False
        #: The specs records name by number (:meth:`known`).
        self.specs: list[Spec] = []
        #: Spans dropped because the queue was full (the exporter fell behind).
        self.dropped = 0
        self._warn_at = 1
        self._thread = threading.Thread(target=self._run, name="p2phost-spans", daemon=True)
        self._thread.start()
        # A node never closed still exports what it queued when the process exits.
        atexit.register(self.shutdown)

    def known(self, spec: Spec) -> int | Spec:
        """What records name ``spec`` by: its number here (appended on the loop, read by
        the thread only for records queued after), or ``spec`` itself once the table is
        full (the callers keep what this returns, so it fills only with their caches)."""
        if len(self.specs) >= _SPECS:
            return spec
        self.specs.append(spec)
        return len(self.specs) - 1

    def add(self, record: Record) -> None:
        """Queue one finished record (on the loop)."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += spans_in(record)
            if self.dropped >= self._warn_at:  # 1, 10, 100...: said while it runs
                self._warn_at *= 10
                log.warning("%d spans were dropped so far: the span exporter fell behind "
                            "or is stuck, and its queue of %d is full (fix: check the "
                            "exporter's endpoint or file, a larger OTEL_BSP_MAX_QUEUE_SIZE, "
                            "or sample fewer traces)", self.dropped, self._max_queue)
            return
        queue.append(record)
        if len(queue) == self._batch:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._export_all()
            with self._idle:
                self._idle.notify_all()
            if self._stopping:
                return

    def _export_all(self) -> None:
        queue, popleft = self._queue, self._queue.popleft
        self._busy = True  # before the first pop: flush() waits for what is in hand
        while queue:
            batch = [popleft() for _ in range(min(len(queue), self._batch))]
            for exporter in self._exporters:
                try:
                    if isinstance(exporter, JsonLinesExporter):
                        exporter.export_records(batch, self._service, self.specs)
                    else:
                        exporter.export([readable(span, self._resource, self._scope)
                                         for record in batch
                                         for span in flat(record, self.specs)])
                except ExportFailed as exc:
                    log.warning("exporting %d records of spans failed, they are lost: %s "
                                "(fix: free space, or another P2PHOST_TRACES_FILE)",
                                len(batch), exc)
                except Exception:  # an exporter's failure must not stop the others
                    log.exception("exporting %d records of spans failed, they are lost (fix: "
                                  "check the endpoint of OTEL_TRACES_EXPORTER's exporter)",
                                  len(batch))
        self._busy = False

    def flush(self, timeout: float = 30.0) -> None:
        """Export what is queued now (blocks: call it off the loop)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._wake.set()
                self._idle.wait(0.1)

    def shutdown(self) -> None:
        """Export what is queued, then stop the thread and the exporters (blocks; once)."""
        if self._stopping:
            return
        atexit.unregister(self.shutdown)
        self._stopping = True
        self._wake.set()
        self._thread.join(30)
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception:  # closing the node must not fail for its traces
                log.exception("closing the span exporter %s failed",
                              type(exporter).__name__)
        if self.dropped:
            log.warning("%d spans were dropped: the exporter fell behind (fix: a larger "
                        "OTEL_BSP_MAX_QUEUE_SIZE, or sample fewer traces)", self.dropped)
