"""Trace contexts as the node handles them: the 25 bytes an envelope carries (trace id,
span id, flags), OpenTelemetry's current span read and set without its helpers, and the
sampler of ``OTEL_TRACES_SAMPLER`` (imported with ``_otel``, only when tracing is on).

While a handler runs, its span is OpenTelemetry's current span (:class:`Handling`: a
``NonRecordingSpan`` whose ``SpanContext`` is made only when app code asks for it), with
no OpenTelemetry context made per message: ``attach``, ``detach``, a ``Context`` and the
SDK's span context checks cost more than the rest of a message's receipt. The node's
tasks run in a :class:`Passing` context (attached once, when the node starts), whose span
is made when app code asks for it from ``SENDING`` (set around the handler of a message
not recorded) or ``HANDLING`` (a recorded one's). A task outside that context gets its
handler's span set straight in OpenTelemetry's context variable.
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
#: While the handler of a recorded message runs in the node's :class:`Passing` context:
#: its handle span's context, that context's current span (a context variable set and
#: reset: no OpenTelemetry ``Context`` made per message). A context the app attaches
#: in the handler (a span of its own) is no ``Passing`` one, and its span comes first.
HANDLING: contextvars.ContextVar[bytes] = contextvars.ContextVar("p2phost_handling",
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


class Passing(Context):
    """OpenTelemetry's context in the node's tasks (:func:`attach_passing`): the values of
    the context it was attached in, and, while ``SENDING`` holds a trace context (the
    handler of a message not recorded, or a send in progress) or else ``HANDLING`` (the
    handler of a recorded one), that context's span as the current span. OpenTelemetry
    reads a value with ``get`` (``get_value``, ``get_current_span``) and copies the
    context with ``copy`` into a plain ``Context`` (``set_value``, so a span the app
    starts here is a child of that span): both look ``SENDING`` and ``HANDLING`` up, at
    the time of the call; nothing is made per message."""

    __slots__ = ()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        """The value of ``key``; for the span key, ``SENDING``'s (``HANDLING``'s) span
        first."""
        if key == SPAN_KEY and (data := SENDING.get() or HANDLING.get()):
            return _passed(data)
        return dict.get(self, key, default)

    def __getitem__(self, key: str) -> object:
        if key == SPAN_KEY and (data := SENDING.get() or HANDLING.get()):
            return _passed(data)
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        return (key == SPAN_KEY and bool(SENDING.get() or HANDLING.get())) \
            or dict.__contains__(self, key)

    def copy(self) -> dict[str, object]:  # type: ignore[override]
        """A plain dict of the values, with ``SENDING``'s (``HANDLING``'s) span if there
        is one."""
        values = dict(self)
        if data := SENDING.get() or HANDLING.get():
            values[SPAN_KEY] = _passed(data)
        return values


#: The last span :func:`_passed` made (an app asks for the current span more than once
#: in a handler: the same span each time, as OpenTelemetry's context would give).
_last: list[Any] = [b"", None]


def _passed(data: bytes) -> Handling:
    """``SENDING``'s context as a span: a remote parent when not sampled (the sender's,
    passed on), else the node's own send in progress."""
    if _last[0] is data or _last[0] == data:
        return _last[1]  # type: ignore[no-any-return]
    span = _new(Handling if data[24] & 1 else _Remote)
    span.data = data
    _last[:] = data, span
    return span


def attach_passing() -> None:
    """Make the current context a :class:`Passing` one (once, where the node starts: the
    tasks it creates from here on copy it), so that an app's handler of a message not
    recorded sees its sender's span as OpenTelemetry's current span."""
    values = get_context()
    if type(values) is not Passing:
        set_context(Passing(values or {}))


def in_context(data: bytes, remote: bool = False) -> Context:
    """OpenTelemetry's current context with the span of ``data`` as its span."""
    span = _new(_Remote if remote else Handling)
    span.data = data
    values = get_context()
    return Context({**values, SPAN_KEY: span}) if values else Context({SPAN_KEY: span})


def span_data() -> bytes:
    """OpenTelemetry's current span as an envelope's trace context (empty: none)."""
    values = get_context()
    span: Any = values.get(SPAN_KEY) if values is not None else None
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
