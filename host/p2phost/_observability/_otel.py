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

The node's spans are not SDK ``Span`` objects: each is recorded once, when it ends, as a
tuple (``_spans``), and a thread exports them; the SDK's span costs more than a message.
Sampling follows the standard ``OTEL_TRACES_SAMPLER`` (and ``_ARG``): a message whose
trace is not sampled costs a lookup and the context passed on, nothing is recorded.
While a handler runs, its span is OpenTelemetry's current span, so spans made by app
code with the global provider nest under it, and a span of the app's around a send is
that send's parent. After each message the task's context is reset as it was (see
:func:`_scoped`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from p2phost_sdk import Message, MessageKind

from .._runtime.messaging._received import number_of
from .._runtime.wire._envelope import TRACE_SIZE
from . import _logs
from ._spans import Batcher, Spec, TracingError, exception_event, exporters
from ._tracing import HELLO_KEY

if TYPE_CHECKING:
    from .._runtime.delivery._delivery import Reliable
    from .._runtime.messaging._dispatch import Dispatcher, Process
    from .._runtime.messaging._routes import Work
    from .._runtime.wire._channel import Channel

__all__ = ["Tracing", "TracingError"]

#: Remote parents kept for messages not yet handled, and specs kept per topic and peer
#: (bounded: a peer that sends traced messages nobody handles cannot grow them).
_PARENTS = 4096
#: The trace context a send in progress puts in its frames (see :func:`_current`).
_SENDING: contextvars.ContextVar[bytes] = contextvars.ContextVar("p2phost_sending",
                                                                 default=b"")
#: The receipt of the request this task handles, ended by its reply: [trace id,
#: receipt span id, parent id, start ns, spec, (message id, attempt), error].
_RECEIPT: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "p2phost_receipt", default=None)
_FLAGS = (b"\x00", b"\x01")
_REQUEST = MessageKind.REQUEST
_SAMPLED, _NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_SAMPLERS = ("always_on", "always_off", "traceidratio")


def _current() -> bytes:
    """The trace context for a frame sent now (empty: no trace): the send's own span,
    else OpenTelemetry's current span (a handler's, or app code's)."""
    data = _SENDING.get()
    if data:
        return data
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return b""
    return (context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")
            + bytes((int(context.trace_flags),)))


def _reads_traces(channel: Channel) -> bool:
    """Whether a frame to ``channel`` may carry a trace context: its peer's hello says it
    reads them, or it is a letter (node/_letters.py, a channel without a hello): a
    stored record carries the context, as docs/wire.md says."""
    hello = getattr(channel, "hello", None)
    return hello is None or hello.extra.get(HELLO_KEY) == 1


def sampling() -> tuple[bool, int]:
    """``OTEL_TRACES_SAMPLER`` (the SDK's names and defaults) as (parent-based, bound):
    a trace is recorded when its parent's is (parent-based, with a parent), else when
    ``trace_id & TRACE_ID_LIMIT < bound`` (the SDK's TraceIdRatioBased rule)."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    rule = name.removeprefix("parentbased_")
    if rule not in _SAMPLERS:
        raise TracingError(f"OTEL_TRACES_SAMPLER={name!r} is not a sampler p2phost knows; "
                           "fix: one of " + ", ".join(
                               (*_SAMPLERS, *(f"parentbased_{s}" for s in _SAMPLERS))))
    if rule == "always_on":
        bound = _ID_LIMIT + 1
    elif rule == "always_off":
        bound = 0
    else:
        try:
            rate = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "") or 1.0)
        except ValueError as exc:
            raise TracingError(f"OTEL_TRACES_SAMPLER_ARG is not a number between 0 and 1; "
                               f"fix: OTEL_TRACES_SAMPLER_ARG=0.01 ({exc})") from exc
        bound = TraceIdRatioBased(rate).bound
    return name.startswith("parentbased_"), bound


class Tracing:
    """A node's spans, what it puts in envelopes, and the wrappers that make spans."""

    def __init__(self, service: str) -> None:
        found = exporters()
        self._parent_based, self._bound = sampling()
        # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and lets OTEL_SERVICE_NAME win.
        self._batcher = Batcher(found, Resource.create({"service.name": service}),
                                InstrumentationScope("p2phost"))
        # The senders' contexts of messages not yet handled, in two generations: the
        # newer fills to _PARENTS, then becomes the older (the oldest are forgotten in
        # one step; evicting one entry per message from a dict costs far more).
        self._parents: dict[tuple[str, int], bytes] = {}
        self._older: dict[tuple[str, int], bytes] = {}
        self._sent: OrderedDict[int, bytes] = OrderedDict()
        self._logs = _logs.json_enabled()

    def _recorded(self, trace_id: int, parent_flags: int | None) -> bool:
        if parent_flags is not None and self._parent_based:
            return bool(parent_flags & 1)
        return (trace_id & _ID_LIMIT) < self._bound

    # -- the envelope ------------------------------------------------------------------

    def outgoing(self, channel: Channel) -> bytes:
        """The current span's context for a frame to ``channel`` (empty when there is no
        span, or the peer did not say it reads trace contexts)."""
        return _current() if _reads_traces(channel) else b""

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
        return self._sent.get(message_id, b"") if _reads_traces(channel) else b""

    def incoming(self, peer: str, message_id: int, trace: bytes) -> None:
        """Remember the sender's context until the message's handler runs."""
        if len(trace) != TRACE_SIZE:
            return
        self._parents[(peer, message_id)] = trace
        if len(self._parents) >= _PARENTS:
            self._older, self._parents = self._parents, {}

    def _parent(self, key: tuple[str, int]) -> bytes | None:
        # get, not pop: a retried message's runs all belong to its sender's trace.
        found = self._parents.get(key)
        return self._older.get(key) if found is None else found

    # -- spans ---------------------------------------------------------------------------

    def instrument(self, dispatch: Dispatcher, delivery: Reliable, messenger: Any) -> None:
        """Trace the dispatcher's handlers and replies and the messenger's sends (before
        the node starts: acknowledged delivery takes its routes from the same table)."""
        dispatch.tracer = delivery.tracer = self
        for topic, route in dispatch.routes.items():
            dispatch.routes[topic] = replace(route, handler=self._receipt(topic, route.handler))
        dispatch.wrap_processing(_scoped)
        # The reply is the dispatcher's own step after the handler, in the same task.
        dispatch._reply = self._replied(dispatch._reply)  # type: ignore[method-assign,assignment]
        # ``store`` (a message kept in an offline peer's inbox) is a send, as the spans
        # of ``send`` to such a peer are.
        for name, verb, kind in (("send", "send", SpanKind.PRODUCER),
                                 ("store", "send", SpanKind.PRODUCER),
                                 ("request", "request", SpanKind.CLIENT),
                                 ("publish", "publish", SpanKind.PRODUCER)):
            setattr(messenger, name, self._sending(verb, kind, getattr(messenger, name)))

    def _sending(self, verb: str, kind: SpanKind, call: Callable[..., Awaitable[Any]]
                 ) -> Callable[..., Awaitable[Any]]:
        specs: dict[tuple[str, str], Spec] = {}
        add, recorded, getrandbits = self._batcher.add, self._recorded, random.getrandbits
        clock, current = time.time_ns, trace.get_current_span

        def spec_of(topic: str, peer: str) -> Spec:
            attributes = {"messaging.system": "p2phost", "messaging.destination.name": topic,
                          "messaging.operation.type": "send"}
            if verb != "publish":
                attributes["p2phost.peer"] = peer
            spec = Spec(f"{verb} {topic}", kind, attributes)
            if len(specs) < _PARENTS:
                specs[topic, peer] = spec
            return spec

        @functools.wraps(call)
        async def sending(*args: Any, **kwargs: Any) -> Any:
            parent = current().get_span_context()
            if parent.is_valid:
                trace_id, parent_id = parent.trace_id, parent.span_id
                record = recorded(trace_id, parent.trace_flags)
            else:
                trace_id, parent_id = getrandbits(128) or 1, 0
                record = recorded(trace_id, None)
            span_id = getrandbits(64) or 1
            token = _SENDING.set(trace_id.to_bytes(16, "big") + span_id.to_bytes(8, "big")
                                 + _FLAGS[record])
            if not record:  # context passed on, nothing recorded
                try:
                    return await call(*args, **kwargs)
                finally:
                    _SENDING.reset(token)
            if verb == "publish":
                topic, peer = args[0] if args else kwargs.get("topic", ""), ""
            else:  # (peer or address, topic, ...), positional or named
                topic = args[1] if len(args) > 1 else kwargs.get("topic", "")
                peer = str(args[0] if args else kwargs.get("peer", kwargs.get("address", "")))
            spec = specs.get((topic, peer)) or spec_of(topic, peer)
            start, error = clock(), None
            try:
                return await call(*args, **kwargs)
            except Exception as exc:
                error = (f"{type(exc).__name__}: {exc}", exception_event(exc), clock())
                raise
            finally:
                _SENDING.reset(token)
                add((spec, trace_id, span_id, parent_id, start, clock(), None, error))

        return sending

    def _receipt(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
                 ) -> Callable[[Message], Awaitable[Any]]:
        parent_of, add, recorded = self._parent, self._batcher.add, self._recorded
        getrandbits, clock, logs = random.getrandbits, time.time_ns, self._logs
        attach, detach, in_context = (otel_context.attach, otel_context.detach,
                                      trace.set_span_in_context)
        specs: dict[tuple[bool, str], Spec] = {}
        handle = Spec(f"handle {topic}", SpanKind.INTERNAL, {})

        def spec_of(request: bool, peer: str) -> Spec:
            spec = Spec(f"receive {topic}", SpanKind.SERVER if request else SpanKind.CONSUMER,
                        {"messaging.system": "p2phost", "messaging.destination.name": topic,
                         "p2phost.peer": peer}, remote_parent=True)
            if len(specs) < _PARENTS:
                specs[request, peer] = spec
            return spec

        @functools.wraps(handler)
        def receipt(message: Message) -> Awaitable[Any]:
            data = parent_of((message.sender, number_of(message)))
            trace_id = parent_id = 0
            if data is not None:
                trace_id, parent_id = int.from_bytes(data[:16]), int.from_bytes(data[16:24])
            if trace_id and parent_id:
                record = recorded(trace_id, data[24])  # type: ignore[index]
            else:
                trace_id, parent_id = getrandbits(128) or 1, 0
                record = recorded(trace_id, None)
            if not record:
                # Context passed on to what the handler sends, nothing recorded. Not
                # detached here: _scoped resets it once the message is processed.
                attach(in_context(NonRecordingSpan(SpanContext(
                    trace_id, parent_id or getrandbits(64) or 1, bool(parent_id),
                    _NOT_SAMPLED))))
                return handler(message)
            return recording(message, trace_id, parent_id)

        async def recording(message: Message, trace_id: int, parent_id: int) -> Any:
            request = message.kind is _REQUEST
            receive_id, handle_id = getrandbits(64) or 1, getrandbits(64) or 1
            spec = specs.get((request, message.sender)) or spec_of(request, message.sender)
            extra = (message.id, message.attempt)
            if logs:
                _logs.bind(trace_id=format(trace_id, "032x"))
            start = clock()
            # A request's receipt is ended by its reply (_replied), in this task.
            receipt_state: list[Any] | None = None
            if request:
                receipt_state = [trace_id, receive_id, parent_id, start, spec, extra, None]
                _RECEIPT.set(receipt_state)
            token = attach(in_context(NonRecordingSpan(SpanContext(
                trace_id, handle_id, False, _SAMPLED))))
            error = failed = None
            try:
                return await handler(message)
            except Exception as exc:
                described = f"{type(exc).__name__}: {exc}"
                error = (described, exception_event(exc), clock())
                failed = (described, None, 0)
                if receipt_state is not None:
                    receipt_state[6] = failed
                raise
            finally:
                detach(token)
                end = clock()
                add((handle, trace_id, handle_id, receive_id, start, end, None, error))
                if not request:
                    add((spec, trace_id, receive_id, parent_id, start, end, extra, failed))

        return receipt

    def _replied(self, reply: Callable[..., Awaitable[None] | None]
                 ) -> Callable[..., Awaitable[None]]:
        add, getrandbits, clock = self._batcher.add, random.getrandbits, time.time_ns
        specs: dict[str, Spec] = {}

        @functools.wraps(reply)
        async def replied(*args: Any, **kwargs: Any) -> None:
            receipt = _RECEIPT.get()
            if receipt is None:
                waiting = reply(*args, **kwargs)
                if waiting is not None:  # the reply waits for room in the outbox
                    await waiting
                return
            _RECEIPT.set(None)
            trace_id, receive_id, parent_id, received, spec, extra, error = receipt
            name = spec.name.removeprefix("receive ")
            answer = specs.get(name)
            if answer is None:
                answer = Spec(f"reply {name}", SpanKind.INTERNAL, {})
                if len(specs) < _PARENTS:
                    specs[name] = answer
            start = clock()
            try:
                waiting = reply(*args, **kwargs)
                if waiting is not None:
                    await waiting
            finally:
                end = clock()
                add((answer, trace_id, getrandbits(64) or 1, receive_id, start, end, None,
                     None))
                add((spec, trace_id, receive_id, parent_id, received, end, extra, error))

        return replied

    async def flush(self) -> None:
        """Export what is queued (off the loop: exporters block)."""
        await asyncio.to_thread(self._batcher.flush)

    async def close(self) -> None:
        """Export what is queued, then stop (off the loop: exporters block)."""
        await asyncio.to_thread(self._batcher.shutdown)


def _scoped(process: Process) -> Process:
    """Leaves the task's context as it found it after each item: the handler's current
    span (attached, not detached, for a trace not sampled) and the request's receipt are
    reset, so the mailbox may run the peer's next item in the same task (it starts a
    fresh task after a handler that left a change of its own behind)."""
    attach, detach, current = otel_context.attach, otel_context.detach, otel_context.get_current

    async def scoped(peer: str, item: Work) -> None:
        span, receipt = attach(current()), _RECEIPT.set(None)
        try:
            await process(peer, item)
        finally:
            _RECEIPT.reset(receipt)
            detach(span)

    return scoped
