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

The node's spans are not SDK ``Span`` objects: each side of a message is recorded once,
when it is done, as one tuple (``_spans``: the receipt with its handle and reply spans
inside), and a thread exports them; the SDK's span costs more than a message. Ids are
kept as the bytes the envelope carries (one random draw gives a new trace its trace and
span ids), so nothing is converted on the loop.
Sampling follows the standard ``OTEL_TRACES_SAMPLER`` (and ``_ARG``): a message whose
trace is not sampled costs a lookup and the context passed on, nothing is recorded.
While a handler runs, its span is OpenTelemetry's current span, so spans made by app
code with the global provider nest under it, and a span of the app's around a send is
that send's parent. That span is a ``NonRecordingSpan`` whose ``SpanContext`` is made
only when app code asks for it, set straight in OpenTelemetry's context variable (its
``attach`` and ``detach`` cost more than the rest of a receipt), and reset after the
handler, as the request's receipt is after its reply: a peer's queued messages then
share the mailbox's task.
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
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from p2phost_sdk import Message, MessageKind

from .._runtime.wire._envelope import TRACE_SIZE
from . import _logs
from ._jsonl import TracingError
from ._spans import Batcher, Spec, exception_event, exporters
from ._tracing import HELLO_KEY

if TYPE_CHECKING:
    from .._runtime.delivery._delivery import Reliable
    from .._runtime.messaging._dispatch import Dispatcher
    from .._runtime.wire._channel import Channel

__all__ = ["Tracing", "TracingError"]

#: Remote parents kept for messages not yet handled, and specs kept per topic and peer
#: (bounded: a peer that sends traced messages nobody handles cannot grow them).
_PARENTS = 4096
#: The trace context a send in progress puts in its frames (see :func:`_current`).
_SENDING: contextvars.ContextVar[bytes] = contextvars.ContextVar("p2phost_sending",
                                                                 default=b"")
#: The receipt of the request this task handles, ended by its reply: [spec, trace id
#: and receipt span id, parent id, start ns, (message id, attempt), the handle span,
#: error, the token that resets this variable].
_RECEIPT: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "p2phost_receipt", default=None)
_FLAGS = (b"\x00", b"\x01")
_REQUEST = MessageKind.REQUEST
_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
#: OR-ed into random draws so that no id is zero (W3C: all zeros is invalid): the lowest
#: bit of a new trace's upper half (its lower half, which sampling reads, stays random)
#: and of its span id; of both span ids of a receipt.
_NEW_TRACE, _TWO_SPANS = (1 << 128) | 1, (1 << 64) | 1
_ZEROS = bytes(16)
_SAMPLERS = ("always_on", "always_off", "traceidratio")


def _runtime_context() -> tuple[Callable[[], Context], Callable[[Context], Any],
                              Callable[[Any], None]]:
    """Get, set and reset OpenTelemetry's current context: its context variable itself
    when the runtime context is the default one, else ``attach`` and ``detach``."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if isinstance(runtime, ContextVarsRuntimeContext):
        var = runtime._current_context
        return var.get, var.set, var.reset
    return otel_context.get_current, otel_context.attach, otel_context.detach


_get_context, _set_context, _reset_context = _runtime_context()


class _Handling(NonRecordingSpan):
    """A handler's span as OpenTelemetry's current span: its trace context as the
    envelope carries it (trace id, span id, flags: 25 bytes), made into a
    ``SpanContext`` only when app code asks for one."""

    def __init__(self, data: bytes, remote: bool = False) -> None:
        # NonRecordingSpan's __init__ takes the SpanContext this span makes on demand.
        self.data, self._remote = data, remote
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        """The span's context (made once)."""
        if self._made is None:
            data = self.data
            self._made = SpanContext(int.from_bytes(data[:16]), int.from_bytes(data[16:24]),
                                     self._remote, TraceFlags(data[24]))
        return self._made

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


def _in_context(span: NonRecordingSpan) -> Context:
    """OpenTelemetry's current context with ``span`` as its span."""
    values = _get_context()
    return Context({**values, _SPAN_KEY: span}) if values else Context({_SPAN_KEY: span})


def _span_data() -> bytes:
    """OpenTelemetry's current span as an envelope's trace context (empty: none)."""
    values = _get_context()
    span: Any = values.get(_SPAN_KEY) if values else None
    if span is None:
        return b""
    if type(span) is _Handling:
        return span.data
    context = span.get_span_context()
    if not context.is_valid:
        return b""
    return bytes(context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")
            + bytes((int(context.trace_flags) & 0xFF,)))


def _current() -> bytes:
    """The trace context for a frame sent now (empty: no trace): the send's own span,
    else OpenTelemetry's current span (a handler's, or app code's)."""
    return _SENDING.get() or _span_data()


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
        self._parent_based, bound = sampling()
        self._always = bound > _ID_LIMIT
        self._bound = bound
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

    def _recorded(self, ids: bytes, parent_flags: int | None) -> bool:
        """Whether the trace whose id starts ``ids`` is recorded (the SDK's rule)."""
        if parent_flags is not None and self._parent_based:
            return bool(parent_flags & 1)
        return self._always or int.from_bytes(ids[8:16]) < self._bound

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
        """Remember the sender's context until the message's handler runs (a context
        of the wrong size, or with a zero trace or span id, is ignored)."""
        if len(trace) != TRACE_SIZE or trace.startswith(_ZEROS) \
                or trace.startswith(_ZEROS[:8], 16):
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
        # The reply is the dispatcher's own step after the handler, in the same task.
        dispatch._reply = self._replied(dispatch._reply)  # type: ignore[method-assign]
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
        clock = time.time_ns

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
            parent = _span_data()
            if parent:
                ids = parent[:16] + (getrandbits(64) | 1).to_bytes(8, "big")
                parent_id, record = parent[16:24], recorded(ids, parent[24])
            else:  # a new trace: its trace id and the span's id in one draw
                ids = (getrandbits(192) | _NEW_TRACE).to_bytes(24, "big")
                parent_id, record = b"", recorded(ids, None)
            token = _SENDING.set(ids + _FLAGS[record])
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
                add((spec, ids, parent_id, start, clock(), None, error, ()))

        return sending

    def _receipt(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
                 ) -> Callable[[Message], Awaitable[Any]]:
        parent_of, add, recorded = self._parent, self._batcher.add, self._recorded
        getrandbits, clock, logs = random.getrandbits, time.time_ns, self._logs
        get_context, set_context, reset_context = _get_context, _set_context, _reset_context
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
            try:
                number: int | str = message._number  # type: ignore[attr-defined]
            except AttributeError:  # not from a frame: a redelivered or stored message
                number = message.id
            data = parent_of((message.sender, number if isinstance(number, int)
                              else int(number, 16)))
            if data is not None:
                trace, parent, record = data[:16], data[16:24], recorded(data, data[24])
            else:
                trace = (getrandbits(128) | _NEW_TRACE >> 64).to_bytes(16, "big")
                parent, record = b"", recorded(trace, None)
            if not record:
                # Context passed on to what the handler sends, nothing recorded.
                return unsampled(message, trace + (
                    parent or (getrandbits(64) | 1).to_bytes(8, "big")) + b"\x00",
                    bool(parent))
            return recording(message, trace, parent, number)

        async def unsampled(message: Message, data: bytes, remote: bool) -> Any:
            token = set_context(_in_context(_Handling(data, remote)))
            try:
                return await handler(message)
            finally:
                reset_context(token)

        async def recording(message: Message, trace: bytes, parent: bytes,
                            number: int | str) -> Any:
            request, sender = message.kind is _REQUEST, message.sender
            ids = (getrandbits(128) | _TWO_SPANS).to_bytes(16, "big")
            receive, handle_id = trace + ids[:8], ids[8:]
            spec = specs.get((request, sender)) or spec_of(request, sender)
            extra = (number, message.attempt)
            if logs:
                _logs.bind(trace_id=trace.hex())
            span = _Handling(trace + handle_id + b"\x01")
            values = get_context()
            token = set_context(Context({**values, _SPAN_KEY: span}) if values
                                else Context({_SPAN_KEY: span}))
            # A request's receipt is ended by its reply (_replied), in this task.
            state: list[Any] | None = None
            if request:
                state = [spec, receive, parent, 0, extra, None, None, None]
                state[7] = _RECEIPT.set(state)
            start = clock()
            error = failed = None
            try:
                return await handler(message)
            except Exception as exc:
                described = f"{type(exc).__name__}: {exc}"
                error = (described, exception_event(exc), clock())
                failed = (described, None, 0)
                raise
            finally:
                end = clock()
                reset_context(token)
                handled = (handle, handle_id, start, end, error)
                if state is None:
                    add((spec, receive, parent, start, end, extra, failed, (handled,)))
                else:
                    state[3], state[5], state[6] = start, handled, failed

        return receipt

    def _replied(self, reply: Callable[..., Awaitable[None] | None]
                 ) -> Callable[..., Awaitable[None] | None]:
        add, getrandbits, clock = self._batcher.add, random.getrandbits, time.time_ns
        specs: dict[str, Spec] = {}

        def answer_of(spec: Spec) -> Spec:
            name = spec.name.removeprefix("receive ")
            answer = specs.get(name)
            if answer is None:
                answer = Spec(f"reply {name}", SpanKind.INTERNAL, {})
                if len(specs) < _PARENTS:
                    specs[name] = answer
            return answer

        def done(state: list[Any], start: int) -> None:
            spec, receive, parent, received, extra, handled, error, _ = state
            end = clock()
            add((spec, receive, parent, received, end, extra, error, (
                handled, (answer_of(spec), (getrandbits(64) | 1).to_bytes(8, "big"), start,
                          end, None))))

        async def waited(waiting: Awaitable[None], state: list[Any], start: int) -> None:
            try:
                await waiting
            finally:
                done(state, start)

        @functools.wraps(reply)
        def replied(*args: Any, **kwargs: Any) -> Awaitable[None] | None:
            state = _RECEIPT.get()
            if state is None or state[5] is None:  # not a recorded receipt's reply
                return reply(*args, **kwargs)
            try:
                _RECEIPT.reset(state[7])  # the task's context as it was
            except ValueError:  # set in another context (not by this task's handler)
                _RECEIPT.set(None)
            start = clock()
            try:
                waiting = reply(*args, **kwargs)
            except BaseException:
                done(state, start)
                raise
            if waiting is None:
                done(state, start)
                return None
            return waited(waiting, state, start)  # the reply waits for room in the outbox

        return replied

    async def flush(self) -> None:
        """Export what is queued (off the loop: exporters block)."""
        await asyncio.to_thread(self._batcher.flush)

    async def close(self) -> None:
        """Export what is queued, then stop (off the loop: exporters block)."""
        await asyncio.to_thread(self._batcher.shutdown)
