"""Traces with OpenTelemetry (imported only when ``_tracing.wanted()``): a span for each
send, request and publish, and on the receiving node one for the message's receipt
with its handler run and its reply inside; the context crosses nodes in the envelope.

Spans of one request from A to B, whose handler asks C (each line a child of the one
above it that is less indented)::

    A  request forward
    B    receive forward
    B      handle forward
    B        request echo
    C          receive echo
    C            handle echo
    C            reply echo
    B      reply forward

Each node has its own TracerProvider (several nodes in one process keep their service
names); spans made by app code with the global provider nest under the node's, since
the current span is a context variable either way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from importlib.metadata import entry_points
from typing import IO, TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from p2phost_sdk import Message, MessageKind

from .._runtime.wire._envelope import TRACE_SIZE
from . import _logs
from ._tracing import HELLO_KEY

if TYPE_CHECKING:
    from .._runtime.delivery._delivery import Reliable
    from .._runtime.messaging._dispatch import Dispatcher
    from .._runtime.wire._channel import Channel
    from .._runtime.wire._envelope import Envelope

#: Remote parents kept for messages not yet handled (bounded: a peer that sends traced
#: messages nobody handles cannot grow it).
_PARENTS = 4096
#: The receipt span of the request this task handles, ended by its reply.
_RECEIPT: contextvars.ContextVar[tuple[Span, str] | None] = contextvars.ContextVar(
    "p2phost_receipt", default=None)


def _current() -> bytes:
    """The current span's context as the envelope carries it (empty: no span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return b""
    return (context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")
            + bytes((int(context.trace_flags),)))


class TracingError(Exception):
    """The OTEL_* variables name an exporter that cannot be loaded."""


def span_line(span: ReadableSpan) -> str:
    """One span as a JSON line: the fields (and formats) of the SDK's ``to_json``, the
    resource reduced to its ``service.name`` (``to_json`` serialises and re-parses the
    whole resource for every span, which costs more than the span itself)."""
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
    """``OTEL_TRACES_EXPORTER=jsonl``: each span as one JSON line (:func:`span_line`)
    appended to ``P2PHOST_TRACES_FILE`` (default ``traces.jsonl``)."""

    def __init__(self, path: str | None = None) -> None:
        self._path = path or os.environ.get("P2PHOST_TRACES_FILE", "traces.jsonl")
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._file is None:
                self._file = open(self._path, "a", encoding="utf-8")
            for span in spans:
                self._file.write(span_line(span) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _exporters() -> list[SpanExporter]:
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


class Tracing:
    """A node's tracer, what it puts in envelopes, and the wrappers that make spans."""

    def __init__(self, service: str) -> None:
        exporters = _exporters()
        # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and lets OTEL_SERVICE_NAME win.
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        for exporter in exporters:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("p2phost")
        self._parents: OrderedDict[tuple[str, int], NonRecordingSpan] = OrderedDict()
        self._sent: OrderedDict[int, bytes] = OrderedDict()
        self._logs = _logs.json_enabled()

    # -- the envelope ------------------------------------------------------------------

    def outgoing(self, channel: Channel) -> bytes:
        """The current span's context for a frame to ``channel`` (empty when there is no
        span, or the peer did not say it reads trace contexts)."""
        if channel.hello.extra.get(HELLO_KEY) != 1:
            return b""
        return _current()

    def remember(self, message_id: int) -> None:
        """Keep the current context for an acknowledged message: the outbox sends it
        later (and again), from its own task. Kept in memory: a message sent after a
        restart starts a trace of its own."""
        data = _current()
        if data:
            self._sent[message_id] = data
            if len(self._sent) > _PARENTS:
                self._sent.popitem(last=False)

    def recall(self, message_id: int, channel: Channel) -> bytes:
        """What :meth:`remember` kept, for a frame to ``channel``."""
        if channel.hello.extra.get(HELLO_KEY) != 1:
            return b""
        return self._sent.get(message_id, b"")

    def incoming(self, peer: str, envelope: Envelope) -> None:
        """Remember the sender's context until the message's handler runs."""
        data = envelope.trace
        if len(data) != TRACE_SIZE:
            return
        parent = NonRecordingSpan(SpanContext(
            int.from_bytes(data[:16], "big"), int.from_bytes(data[16:24], "big"),
            is_remote=True, trace_flags=TraceFlags(data[24])))
        if not parent.get_span_context().is_valid:
            return
        self._parents[(peer, envelope.message_id)] = parent
        if len(self._parents) > _PARENTS:
            self._parents.popitem(last=False)

    # -- spans ---------------------------------------------------------------------------

    def instrument(self, dispatch: Dispatcher, delivery: Reliable, messenger: Any) -> None:
        """Trace the dispatcher's handlers and replies and the messenger's sends (before
        the node starts: acknowledged delivery takes its routes from the same table)."""
        dispatch.tracer = delivery.tracer = self
        for topic, route in dispatch.routes.items():
            dispatch.routes[topic] = replace(route, handler=self._receipt(topic, route.handler))
        # The reply is the dispatcher's own step after the handler, in the same task.
        dispatch._reply = self._replied(dispatch._reply)  # type: ignore[method-assign,assignment]
        for name, kind in (("send", SpanKind.PRODUCER), ("request", SpanKind.CLIENT),
                           ("publish", SpanKind.PRODUCER)):
            setattr(messenger, name, self._sending(name, kind, getattr(messenger, name)))

    def _sending(self, verb: str, kind: SpanKind, call: Callable[..., Awaitable[Any]]
                 ) -> Callable[..., Awaitable[Any]]:
        tracer = self.tracer

        @functools.wraps(call)
        async def sending(*args: Any, **kwargs: Any) -> Any:
            topic = args[1] if verb != "publish" else args[0]
            attributes = {"messaging.system": "p2phost", "messaging.destination.name": topic,
                          "messaging.operation.type": "send"}
            if verb != "publish":
                attributes["p2phost.peer"] = str(args[0])
            with tracer.start_as_current_span(f"{verb} {topic}", kind=kind,
                                              attributes=attributes):
                return await call(*args, **kwargs)

        return sending

    def _receipt(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
                 ) -> Callable[[Message], Awaitable[Any]]:
        tracer, parents = self.tracer, self._parents

        @functools.wraps(handler)
        async def receipt(message: Message) -> Any:
            # get, not pop: a retried message's runs all belong to its sender's trace.
            parent = parents.get((message.sender, int(message.id, 16)))
            if parent is not None and not parent.get_span_context().trace_flags.sampled:
                # The sender's trace is not recorded: make no spans, but pass its context
                # on to what the handler sends, so that none of it is recorded either.
                with trace.use_span(parent):
                    return await handler(message)
            request = message.kind is MessageKind.REQUEST
            span = tracer.start_span(
                f"receive {topic}", context=trace.set_span_in_context(parent) if parent
                else None, kind=SpanKind.SERVER if request else SpanKind.CONSUMER,
                attributes={"messaging.system": "p2phost", "messaging.destination.name": topic,
                            "messaging.message.id": message.id, "p2phost.peer": message.sender,
                            "p2phost.attempt": message.attempt})
            if not span.is_recording():  # this node's sampler said no: no children either
                with trace.use_span(span):
                    return await handler(message)
            if self._logs:
                _logs.bind(trace_id=format(span.get_span_context().trace_id, "032x"))
            if request:
                _RECEIPT.set((span, topic))
            try:
                with trace.use_span(span), tracer.start_as_current_span(f"handle {topic}"):
                    return await handler(message)
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            finally:
                if not request:
                    span.end()

        return receipt

    def _replied(self, reply: Callable[..., Awaitable[None] | None]
                 ) -> Callable[..., Awaitable[None]]:
        tracer = self.tracer

        @functools.wraps(reply)
        async def replied(*args: Any, **kwargs: Any) -> None:
            receipt = _RECEIPT.get()
            if receipt is None:
                waiting = reply(*args, **kwargs)
                if waiting is not None:  # the reply waits for room in the outbox
                    await waiting
                return
            _RECEIPT.set(None)
            span, topic = receipt
            try:
                with trace.use_span(span), tracer.start_as_current_span(f"reply {topic}"):
                    waiting = reply(*args, **kwargs)
                    if waiting is not None:
                        await waiting
            finally:
                span.end()

        return replied

    async def close(self) -> None:
        """Export what is buffered, then stop (off the loop: exporters block)."""
        await asyncio.to_thread(self.provider.shutdown)
