"""Finished spans as plain tuples, exported in batches by a thread of their own.

The OpenTelemetry SDK's ``Span`` costs 9-15 µs of CPU to start and end (its locks,
attribute copies, the span processor), more than a whole p2phost message (about 8 µs).
The node's own spans (send, receive, handle, reply) are therefore recorded on the loop
as a tuple each (:data:`Record`, well under a microsecond), and this module's thread
turns them into what the exporters take: SDK ``ReadableSpan`` objects for any exporter
named by ``OTEL_TRACES_EXPORTER`` (otlp, console...), or straight into lines for
p2phost's ``jsonl`` exporter. The thread's CPU is the process's: the benchmark
(benchmarks/observability.py) counts it.

Batching follows the standard ``OTEL_BSP_*`` variables (schedule delay, queue size,
batch size); spans beyond a full queue are dropped and counted, as the SDK's
BatchSpanProcessor does.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger("p2phost.node")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class TracingError(Exception):
    """The OTEL_* variables name an exporter that cannot be loaded."""


class ExportFailed(Exception):
    """An exporter could not write (a full disk): said in one line, no traceback."""


class Spec:
    """What the spans of one name share (made once per topic and peer, not per span):
    name, kind, the attributes known before the message, whether the parent is remote,
    and for the jsonl exporter the JSON of those."""

    __slots__ = ("_json", "attributes", "kind", "name", "remote_parent")

    def __init__(self, name: str, kind: SpanKind, attributes: dict[str, Any],
                 remote_parent: bool = False) -> None:
        self.name, self.kind, self.attributes = name, kind, attributes
        self.remote_parent = remote_parent
        self._json: tuple[str, str, str] | None = None

    def json_parts(self) -> tuple[str, str, str]:
        """The span's name, kind and attributes (without the closing brace) as JSON."""
        if self._json is None:
            self._json = (json.dumps(self.name), json.dumps(str(self.kind)),
                          json.dumps(self.attributes, default=str)[:-1])
        return self._json


#: One finished span: (spec, trace id, span id, parent span id (0: none), start ns,
#: end ns, (message id, attempt) or None, error or None). An error is (status
#: description, the exception event's attributes or None, the event's time in ns).
Record = tuple[Spec, int, int, int, int, int, "tuple[str, int] | None",
               "tuple[str, dict[str, Any] | None, int] | None"]


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


def _attributes(spec: Spec, extra: tuple[str, int] | None) -> dict[str, Any]:
    if extra is None:
        return spec.attributes
    return {**spec.attributes, "messaging.message.id": extra[0], "p2phost.attempt": extra[1]}


def readable(record: Record, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """A record as the SDK's exporters take it."""
    spec, trace_id, span_id, parent_id, start, end, extra, error = record
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


class _Iso:
    """``ns_to_iso_str``'s text (to the microsecond, truncated), with the date and time
    to the second made once a second: datetime formatting costs more than the rest of a
    span's line. A time in nanoseconds has 19 digits from 2001 to 2286, the first 10 the
    seconds: the microseconds are cut from its text."""

    def __init__(self) -> None:
        self._second, self._prefix = "", ""

    def __call__(self, ns: int) -> str:
        text = str(ns)
        if len(text) != 19:
            second, rest = divmod(ns, 1_000_000_000)
            return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}." \
                   f"{rest // 1000:06d}Z"
        if text[:10] != self._second:
            self._second = text[:10]
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(int(text[:10])))
        return f"{self._prefix}{text[10:16]}Z"


def span_line(span: ReadableSpan) -> str:
    """One SDK span as a JSON line (the fields and formats of the SDK's ``to_json``, the
    resource reduced to its ``service.name``)."""
    context, parent = span.get_span_context(), span.parent
    status: dict[str, str] = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    return json.dumps({
        "name": span.name,
        "context": {"trace_id": f"0x{context.trace_id:032x}",
                    "span_id": f"0x{context.span_id:016x}"} if context else None,
        "kind": str(span.kind),
        "parent_id": None if parent is None else f"0x{parent.span_id:016x}",
        "start_time": ns_to_iso_str(span.start_time) if span.start_time else None,
        "end_time": ns_to_iso_str(span.end_time) if span.end_time else None,
        "status": status,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "timestamp": ns_to_iso_str(e.timestamp),
                    "attributes": dict(e.attributes or {})} for e in span.events],
        "service": span.resource.attributes.get("service.name"),
    }, default=str)


class JsonLinesExporter(SpanExporter):
    """``OTEL_TRACES_EXPORTER=jsonl``: each span as one JSON line appended to
    ``P2PHOST_TRACES_FILE`` (default ``traces.jsonl``); the same line for the node's
    records (:meth:`export_records`) as for SDK spans (:func:`span_line`)."""

    def __init__(self, path: str | None = None) -> None:
        self._path = path or os.environ.get("P2PHOST_TRACES_FILE", "traces.jsonl")
        self._file: IO[str] | None = None
        try:  # a path that cannot be written is said at start, not at every batch
            self._file = open(self._path, "a", encoding="utf-8")
        except OSError as exc:
            raise TracingError(
                f"P2PHOST_TRACES_FILE={self._path!r} cannot be written ({exc.strerror}); "
                "fix: a file in an existing directory this process may write") from exc
        self._lock = threading.Lock()
        self._iso = _Iso()

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            if self._file is None:
                self._file = open(self._path, "a", encoding="utf-8")
            try:
                self._file.write("".join(lines))
                self._file.flush()
            except OSError as exc:
                # A full disk: what the buffer holds is lost, not written half later;
                # the next batch opens the file again.
                self._discard()
                raise ExportFailed(f"{self._path}: {exc.strerror or exc}") from exc

    def _discard(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._write([span_line(span) + "\n" for span in spans])
        return SpanExportResult.SUCCESS

    def export_records(self, records: Sequence[Record], service: str) -> None:
        """The node's records, formatted from pre-made JSON parts."""
        iso, tail = self._iso, f', "service": {json.dumps(service)}}}\n'
        lines = []
        for spec, trace_id, span_id, parent_id, start, end, extra, error in records:
            name, kind, attributes = spec.json_parts()
            if extra is not None:
                attributes = (f'{attributes}, "messaging.message.id": "{extra[0]}", '
                              f'"p2phost.attempt": {extra[1]}' if len(attributes) > 1 else
                              f'{{"messaging.message.id": "{extra[0]}", '
                              f'"p2phost.attempt": {extra[1]}')
            if error is None:
                status, events = '{"status_code": "UNSET"}', "[]"
            else:
                status = json.dumps({"status_code": "ERROR", "description": error[0]})
                events = "[]" if error[1] is None else json.dumps(
                    [{"name": "exception", "timestamp": iso(error[2]),
                      "attributes": error[1]}], default=str)
            # bytes.hex: half the cost of a padded hex format
            parent = f'"0x{parent_id.to_bytes(8).hex()}"' if parent_id else "null"
            lines.append(
                f'{{"name": {name}, "context": {{"trace_id": "0x{trace_id.to_bytes(16).hex()}", '
                f'"span_id": "0x{span_id.to_bytes(8).hex()}"}}, "kind": {kind}, '
                f'"parent_id": {parent}, '
                f'"start_time": "{iso(start)}", "end_time": "{iso(end)}", "status": '
                f'{status}, "attributes": {attributes}}}, "events": {events}{tail}')
        self._write(lines)

    def shutdown(self) -> None:
        with self._lock:
            self._discard()  # a failed last write was reported by the exporting thread


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
        #: Spans dropped because the queue was full (the exporter fell behind).
        self.dropped = 0
        self._warn_at = 1
        self._thread = threading.Thread(target=self._run, name="p2phost-spans", daemon=True)
        self._thread.start()
        # A node never closed still exports what it queued when the process exits.
        atexit.register(self.shutdown)

    def add(self, record: Record) -> None:
        """Queue one finished span (on the loop)."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
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
                        exporter.export_records(batch, self._service)
                    else:
                        exporter.export([readable(r, self._resource, self._scope)
                                         for r in batch])
                except ExportFailed as exc:
                    log.warning("exporting %d spans failed, they are lost: %s (fix: free "
                                "space, or another P2PHOST_TRACES_FILE)", len(batch), exc)
                except Exception:  # an exporter's failure must not stop the others
                    log.exception("exporting %d spans failed, they are lost (fix: check "
                                  "the endpoint of OTEL_TRACES_EXPORTER's exporter)",
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
