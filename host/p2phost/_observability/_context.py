"""Trace contexts as the node handles them: the 25 bytes an envelope carries (trace id,
span id, flags), OpenTelemetry's current span read and set without its helpers, and the
sampler of ``OTEL_TRACES_SAMPLER`` (imported with ``_otel``, only when tracing is on).

While a handler runs, its span is OpenTelemetry's current span (:class:`Handling`: a
``NonRecordingSpan`` whose ``SpanContext`` is made only when app code asks for it), set
straight in OpenTelemetry's context variable: ``attach``, ``detach`` and the SDK's span
context checks cost more than the rest of a message's receipt.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from ._jsonl import TracingError
from ._tracing import HELLO_KEY

if TYPE_CHECKING:
    from .._runtime.wire._channel import Channel

#: The trace context a send in progress puts in its frames (see :func:`current`); also,
#: while the handler of a message not recorded runs, its sender's context, passed on.
SENDING: contextvars.ContextVar[bytes] = contextvars.ContextVar("p2phost_sending",
                                                                default=b"")
#: The key of the current span in OpenTelemetry's ``Context``, as its public
#: ``set_span_in_context`` puts it (no private name imported).
(SPAN_KEY,) = set_span_in_context(INVALID_SPAN, Context())
ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_SAMPLERS = ("always_on", "always_off", "traceidratio")
_new = object.__new__


def _runtime_context() -> tuple[Callable[[], Context], Callable[[Context], Any],
                                Callable[[Any], None]]:
    """Get, set and reset OpenTelemetry's current context: the context variable that
    holds it when there is one (found as the variable a public ``attach`` sets, no
    private name read), else ``get_current``, ``attach`` and ``detach``."""
    probe = Context()
    token = otel_context.attach(probe)
    try:
        found = [var for var, value in contextvars.copy_context().items() if value is probe]
    finally:
        otel_context.detach(token)
    if len(found) == 1:
        var: contextvars.ContextVar[Context] = found[0]
        return var.get, var.set, var.reset
    return otel_context.get_current, otel_context.attach, otel_context.detach


get_context, set_context, reset_context = _runtime_context()


class Handling(NonRecordingSpan):
    """A handler's span as OpenTelemetry's current span: its trace context as the
    envelope carries it (:attr:`data`), made into a ``SpanContext`` only when app code
    asks for one. Made with :func:`handling` (no ``__init__`` call: one per message)."""

    data: bytes
    #: Whether the span stands for a remote parent (an unsampled message's sender).
    remote = False
    _made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        """The span's context (made once)."""
        if self._made is None:
            data = self.data
            self._made = SpanContext(int.from_bytes(data[:16]), int.from_bytes(data[16:24]),
                                     self.remote, TraceFlags(data[24]))
        return self._made

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


class _Remote(Handling):
    remote = True


def in_context(data: bytes, remote: bool = False) -> Context:
    """OpenTelemetry's current context with the span of ``data`` as its span."""
    span = _new(_Remote if remote else Handling)
    span.data = data
    values = get_context()
    return Context({**values, SPAN_KEY: span}) if values else Context({SPAN_KEY: span})


def span_data() -> bytes:
    """OpenTelemetry's current span as an envelope's trace context (empty: none)."""
    values = get_context()
    span: Any = values.get(SPAN_KEY) if values else None
    if span is None:
        return b""
    if isinstance(span, Handling):
        return span.data
    context = span.get_span_context()
    if not context.is_valid:
        return b""
    return bytes(context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")
                 + bytes((int(context.trace_flags) & 0xFF,)))


def current() -> bytes:
    """The trace context for a frame sent now (empty: no trace): the send's own span,
    else OpenTelemetry's current span (a handler's, or app code's)."""
    return SENDING.get() or span_data()


def reads_traces(channel: Channel) -> bool:
    """Whether a frame to ``channel`` may carry a trace context: its peer's hello says it
    reads them, or it is a letter (node/_letters.py, a channel without a hello): a
    stored record carries the context, as docs/wire.md says."""
    hello = getattr(channel, "hello", None)
    return hello is None or hello.extra.get(HELLO_KEY) == 1


def sampling() -> tuple[bool, int]:
    """``OTEL_TRACES_SAMPLER`` (the SDK's names and defaults) as (parent-based, bound):
    a trace is recorded when its parent's is (parent-based, with a parent), else when
    ``trace_id & TRACEID_LIMIT < bound`` (the SDK's TraceIdRatioBased rule)."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    rule = name.removeprefix("parentbased_")
    if rule not in _SAMPLERS:
        raise TracingError(f"OTEL_TRACES_SAMPLER={name!r} is not a sampler p2phost knows; "
                           "fix: one of " + ", ".join(
                               (*_SAMPLERS, *(f"parentbased_{s}" for s in _SAMPLERS))))
    if rule == "always_on":
        bound = ID_LIMIT + 1
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
