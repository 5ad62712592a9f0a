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
Sampling follows the standard ``OTEL_TRACES_SAMPLER`` (and ``_ARG``), decided once at a
trace's root and carried in the context's flags: a received message whose trace is not
recorded runs its route's bare handler (:meth:`Tracing.incoming` decides when its frame
is taken), with only ``SENDING`` set around it so that its handler's sends pass the
context on; nothing is recorded, no OpenTelemetry context is made for it: the node's
tasks run in one attached when it starts (``_context.Passing``), whose current span is
``SENDING``'s, made only when app code asks for it (a span the app starts there is a
child of the sender's, not recorded, as OpenTelemetry's parent-based samplers decide).
While a recorded message's handler runs, its span is OpenTelemetry's current span, so
spans made by app code with the global provider nest under it, and a span of the app's
around a send is that send's parent. That span is a ``NonRecordingSpan`` whose
``SpanContext`` is made only when app code asks for it, from ``_context.HANDLING`` (a
context variable the node's ``Passing`` context reads: no OpenTelemetry ``Context`` per
message; its ``attach`` and ``detach`` cost more than the rest of a receipt), reset
after the handler, as the request's receipt is after its reply: a peer's
queued messages then share the mailbox's task.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from p2phost_sdk import Message, MessageKind, TraceContext

from .._runtime.wire._envelope import TRACE_SIZE
from . import _logs
from ._context import (
    HANDLING,
    ID_LIMIT,
    SENDING,
    SPAN_KEY,
    Handling,
    Passing,
    attach_passing,
    current,
    get_context,
    in_context,
    reads_traces,
    reset_context,
    sampling,
    set_context,
    span_data,
)
from ._jsonl import TracingError
from ._spans import Batcher, Spec, exception_event, exporters
from ._tracing import HELLO_KEY as _HELLO_KEY

if TYPE_CHECKING:
    from .._runtime.delivery._delivery import Reliable
    from .._runtime.messaging._dispatch import Dispatcher
    from .._runtime.wire._channel import Channel

__all__ = ["Tracing", "TracingError"]

#: Remote parents kept for messages not yet handled, and specs kept per topic and peer
#: (bounded: a peer that sends traced messages nobody handles cannot grow them).
_PARENTS = 4096
#: The receipt of the request this task handles, ended by its reply: [spec, trace id
#: and receipt span id, parent id, start ns, message number or id, attempt, the handle
#: span's fields (once the handler ran), error, the token that resets this variable].
_RECEIPT: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "p2phost_receipt", default=None)
_REQUEST = MessageKind.REQUEST
#: OR-ed into random draws so that no id is zero (W3C: all zeros is invalid): the lowest
#: bit of a new trace's upper half (its lower half, which sampling reads, stays random)
#: and of its span id; of both span ids of a receipt.
_NEW_TRACE, _TWO_SPANS = (1 << 128) | 1, (1 << 64) | 1
#: A new trace's trace id's lower half in its 192-bit draw.
_LOWER = ID_LIMIT << 64
_ZEROS = bytes(16)
_ZEROS_8 = bytes(8)
_new = object.__new__
getrandbits = random.getrandbits


class Tracing:
    """A node's spans, what it puts in envelopes, and the wrappers that make spans."""

    def __init__(self, service: str) -> None:
        found = exporters()
        self._parent_based, bound = sampling()
        #: Whether this node's sampler decides on a trace its sender did not sample (else
        #: the dispatcher passes such a context on without asking :meth:`incoming`).
        self.decides = not self._parent_based
        self._always = bound > ID_LIMIT
        self._bound = bound
        #: A new trace's 192-bit draw (trace id, span id) is not sampled when
        #: ``ids & _LOWER >= self._above``: its trace id's lower half against the bound in
        #: place (never, for an always-on sampler), one ``&`` where a shift was too.
        self._above = bound << 64
        # OR-ed into a new unsampled trace's random ids (_root): no zero id, and for a
        # rate up to one half the top bit of the trace id's lower half, above the bound.
        self._unsampled = _NEW_TRACE | (1 << 127 if bound <= 1 << 63 else 0)
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
        #: The specs of the root spans :meth:`trace_context` began, by name.
        self._roots: dict[str, int | Spec] = {}
        #: The ids a send of a new trace not sampled drew, for its frame (outgoing: one
        #: draw for both). Any frame of a new trace may take them: if another send's frame
        #: does first (this one waited to connect), both are new unsampled traces anyway.
        self._drawn = 0
        #: While the bare handler of a message not recorded runs: its sender's context
        #: is what its sends carry (set and reset by the dispatcher, straight C calls).
        self.enter, self.leave = SENDING.set, SENDING.reset

    def attach(self) -> None:
        """Where the node starts (its tasks copy this context): OpenTelemetry's context
        that makes the sender's span current in the handler of a message not recorded
        (``_context.Passing``: looked up when app code asks, nothing done per message)."""
        attach_passing()

    # -- the envelope ------------------------------------------------------------------

    def outgoing(self, channel: Channel) -> bytes:
        """The current span's context for a frame to ``channel`` (empty when there is no
        span, or the peer did not say it reads trace contexts)."""
        data = SENDING.get() or (HANDLING.get() if type(values := get_context()) is Passing
                                 else b"") or (span_data() if values else b"")
        if not data:
            # A new trace not sampled: the ids its send drew (_sending), else new ones.
            ids, self._drawn = self._drawn, 0
            if ids:
                data = (ids << 8).to_bytes(25)
            else:
                data = self._root()
                if not data:
                    return b""
        hello = getattr(channel, "hello", None)  # reads_traces, inline: once per frame
        return data if hello is None or hello.extra.get(_HELLO_KEY) == 1 else b""

    def _root(self) -> bytes:
        """The context of a new trace that is not sampled (empty when every new trace is:
        a frame outside any send then carries none): a send that is not recorded sets
        nothing, and its frame is made here. Its trace id's lower half is not below the
        sampling bound, so a ratio sampler downstream does not record it either."""
        if self._always:
            return b""
        ids = getrandbits(192) | self._unsampled
        while (ids >> 64) & ID_LIMIT < self._bound:  # only for a rate over one half
            ids = getrandbits(192) | self._unsampled
        return ids.to_bytes(24) + b"\x00"

    def remember(self, message_id: int) -> None:
        """Keep the current context for an acknowledged message: the outbox sends it
        later (and again), from its own task. Kept in memory: a message sent after a
        restart starts a trace of its own."""
        data = SENDING.get() or span_data() or self._root()
        if data:
            self._sent[message_id] = data
            if len(self._sent) > _PARENTS:
                self._sent.popitem(last=False)

    def recall(self, message_id: int, channel: Channel) -> bytes:
        """What :meth:`remember` kept, for a frame to ``channel``."""
        return self._sent.get(message_id, b"") if reads_traces(channel) else b""

    def incoming(self, peer: str, message_id: int, trace: bytes, keep: bool = False) -> bytes:
        """The sampling decision for a message carrying its sender's context: a recorded
        one's context is remembered until its receipt (the route's handler) looks it up,
        and b"" returned; one not recorded costs nothing more, its context is returned
        for the bare handler's sends to pass on (the dispatcher's ``enter``). ``keep``:
        remembered either way (acknowledged delivery: each run looks it up). A context
        of the wrong size, or with a zero trace or span id, is ignored (b"")."""
        if len(trace) != TRACE_SIZE or trace.startswith(_ZEROS) \
                or trace.startswith(_ZEROS_8, 16):
            return b""
        if not keep:
            if self._parent_based:
                if not trace[24] & 1:
                    return trace
            elif not self._always and int.from_bytes(trace[8:16]) >= self._bound:
                # A sampler that is not parent-based decided against it: passed on as
                # not sampled, so that what follows is not recorded either.
                return trace if not trace[24] & 1 else trace[:24] + b"\x00"
        self._parents[(peer, message_id)] = trace
        if len(self._parents) >= _PARENTS:
            self._older, self._parents = self._parents, {}
        return b""

    # -- spans ---------------------------------------------------------------------------

    def instrument(self, dispatch: Dispatcher, delivery: Reliable, messenger: Any) -> None:
        """Trace the dispatcher's handlers and replies and the messenger's sends (before
        the node starts: acknowledged delivery takes its routes from the same table)."""
        dispatch.tracer = delivery.tracer = self
        for topic, route in dispatch.routes.items():
            dispatch.routes[topic] = replace(route, handler=self._receipt(topic, route.handler),
                                             bare=route.handler)
        # The reply is the dispatcher's own step after the handler, in the same task.
        dispatch._reply = self._replied(dispatch._reply)  # type: ignore[method-assign]
        # A context for sends made later, from another task (Messenger.trace_context).
        messenger.trace_context = self.trace_context
        # ``store`` (a message kept in an offline peer's inbox) is a send, as the spans
        # of ``send`` to such a peer are.
        for name, verb, kind in (("send", "send", SpanKind.PRODUCER),
                                 ("store", "send", SpanKind.PRODUCER),
                                 ("request", "request", SpanKind.CLIENT),
                                 ("publish", "publish", SpanKind.PRODUCER)):
            setattr(messenger, name, self._sending(verb, kind, getattr(messenger, name)))

    def trace_context(self, root: str = "") -> TraceContext | None:
        """:meth:`p2phost_sdk.Messenger.trace_context` on a tracing node: the context a
        send made here would continue; with ``root`` and none here, a new trace's, whose
        span named ``root`` (the plugin's own: a gossip publish) is recorded now when
        sampled, as the parent of the sends made in it. Carried by setting ``SENDING``,
        as the handler of a message not recorded is run: a send there is its child, or
        passes its context on when not sampled."""
        data = current()
        if not data and root:
            ids = getrandbits(192) | _NEW_TRACE
            if self._always or (ids >> 64) & ID_LIMIT < self._bound:
                spec = self._roots.get(root)
                if spec is None:
                    spec = Spec(root, SpanKind.PRODUCER, {"messaging.system": "p2phost"})
                    if len(self._roots) < _PARENTS:
                        spec = self._roots[root] = self._batcher.known(spec)
                data = ids.to_bytes(24)
                now = time.time_ns()
                self._batcher.add((spec, data, b"", now, now, None))
                data += b"\x01"
            else:  # not sampled: only its context travels on
                data = self._root()
        return TraceContext(data, SENDING.set, SENDING.reset) if data else None

    def _sending(self, verb: str, kind: SpanKind, call: Callable[..., Awaitable[Any]]
                 ) -> Callable[..., Awaitable[Any]]:
        specs: dict[tuple[str, str], int | Spec] = {}
        add, getrandbits, clock = self._batcher.add, random.getrandbits, time.time_ns
        parent_based, always, bound = self._parent_based, self._always, self._bound
        known, root, tracing, above = self._batcher.known, self._root, self, self._above

        def spec_of(topic: str, peer: str) -> int | Spec:
            attributes = {"messaging.system": "p2phost", "messaging.destination.name": topic,
                          "messaging.operation.type": "send"}
            if verb != "publish":
                attributes["p2phost.peer"] = peer
            spec = Spec(f"{verb} {topic}", kind, attributes)
            if len(specs) >= _PARENTS:
                return spec
            number = specs[topic, peer] = known(spec)
            return number

        async def recorded(ids: bytes, parent_id: bytes, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> Any:
            # A recorded send: its span's context is in its frames (SENDING).
            if verb == "publish":
                topic, peer = args[0] if args else kwargs.get("topic", ""), ""
            else:  # (peer or address, topic, ...), positional or named
                topic = args[1] if len(args) > 1 else kwargs.get("topic", "")
                peer = args[0] if args else kwargs.get("peer", kwargs.get("address", ""))
                if type(peer) is not str:
                    peer = str(peer)
            spec = specs.get((topic, peer)) or spec_of(topic, peer)
            token = SENDING.set(ids + b"\x01")
            start, error = clock(), None
            try:
                return await call(*args, **kwargs)
            except Exception as exc:
                error = (f"{type(exc).__name__}: {exc}", exception_event(exc), clock())
                raise
            finally:
                SENDING.reset(token)
                add((spec, ids, parent_id, start, clock(), error))

        async def passed(data: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            # Not recorded, with a context its frames must carry (SENDING): a publish's,
            # or a sampler that is not parent-based decided against a sampled parent.
            token = SENDING.set(data)
            try:
                return await call(*args, **kwargs)
            finally:
                SENDING.reset(token)

        @functools.wraps(call)
        def sending(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            # Not a coroutine: a send that is not recorded is the call itself, with no
            # context variable set; its frames take the context outgoing() finds.
            # (SENDING: the context of a message not recorded, whose handler this is.)
            parent = SENDING.get() or (HANDLING.get() if type(values := get_context())
                                       is Passing else b"") or (span_data() if values else b"")
            if parent:
                if parent_based:
                    if not parent[24] & 1:  # the parent's context, as it is, in the frames
                        return call(*args, **kwargs)
                elif not always and int.from_bytes(parent[8:16]) >= bound:
                    return passed(parent[:24] + b"\x00", args, kwargs) if parent[24] & 1 \
                        else call(*args, **kwargs)
                return recorded(parent[:16] + (getrandbits(64) | 1).to_bytes(8),
                                parent[16:24], args, kwargs)
            if always:  # a new trace: its trace id and the span's id in one draw
                return recorded((getrandbits(192) | _NEW_TRACE).to_bytes(24), b"",
                                args, kwargs)
            # A new trace's ids (trace id, span id) in one draw; sampling reads the trace
            # id's lower half.
            ids = getrandbits(192) | _NEW_TRACE
            if ids & _LOWER >= above:  # not sampled: the frame carries its ids
                if verb == "publish":  # (its frames, one per codec, share one context)
                    return passed(root(), args, kwargs)
                tracing._drawn = ids
                return call(*args, **kwargs)
            return recorded(ids.to_bytes(24), b"", args, kwargs)

        if getattr(call, "__name__", "") != "send":  # (``store`` is a send too: not here)
            return sending

        @functools.wraps(call)
        def send(peer: str, topic: str, body: Any, key: str | None = None) -> Awaitable[Any]:
            # ``sending`` for a send's usual call, positional: a call to it, and its own to
            # ``call``, take the interpreter's fast path (none with *args or keyword-only
            # parameters), a third of a message's cost of not being recorded.
            parent = SENDING.get() or (HANDLING.get() if type(values := get_context())
                                       is Passing else b"") or (span_data() if values else b"")
            if parent:
                if not parent_based:
                    return sending(peer, topic, body, key=key)
                if not parent[24] & 1:  # the parent's context, as it is, in the frames
                    return call(peer, topic, body) if key is None \
                        else call(peer, topic, body, key=key)
                return recorded(parent[:16] + (getrandbits(64) | 1).to_bytes(8),
                                parent[16:24], (peer, topic, body),
                                {} if key is None else {"key": key})
            ids = getrandbits(192) | _NEW_TRACE
            if not always and ids & _LOWER >= above:  # not sampled (as above)
                tracing._drawn = ids
                return call(peer, topic, body) if key is None \
                    else call(peer, topic, body, key=key)
            return recorded(ids.to_bytes(24), b"", (peer, topic, body),
                            {} if key is None else {"key": key})

        return send

    def _receipt(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
                 ) -> Callable[[Message], Awaitable[Any]]:
        add = self._batcher.add
        getrandbits, clock, logs = random.getrandbits, time.time_ns, self._logs
        parent_based, always, bound = self._parent_based, self._always, self._bound
        specs: dict[tuple[bool, str], int | Spec] = {}
        known, root = self._batcher.known, self._root
        handle = known(Spec(f"handle {topic}", SpanKind.INTERNAL, {}))

        def spec_of(request: bool, peer: str) -> int | Spec:
            spec = Spec(f"receive {topic}", SpanKind.SERVER if request else SpanKind.CONSUMER,
                        {"messaging.system": "p2phost", "messaging.destination.name": topic,
                         "p2phost.peer": peer}, remote_parent=True)
            if len(specs) >= _PARENTS:
                return spec
            number = specs[request, peer] = known(spec)
            return number

        @functools.wraps(handler)
        async def receipt(message: Message) -> Any:
            try:
                number: int | str = message._number  # type: ignore[attr-defined]
            except AttributeError:  # not from a frame: a redelivered or stored message
                number = message.id
            # get, not pop: a retried message's runs all belong to its sender's trace.
            key = (message.sender, number if isinstance(number, int) else int(number, 16))
            data = self._parents.get(key) or self._older.get(key)
            if data is not None:
                record = data[24] & 1 if parent_based else \
                    always or int.from_bytes(data[8:16]) < bound
                if not record:  # the sender's context passed on as it came (if unsampled)
                    token = set_context(in_context(data if not data[24] & 1
                                                   else data[:24] + b"\x00", True))
                    try:
                        return await handler(message)
                    finally:
                        reset_context(token)
                trace, parent = data[:16], data[16:24]
            else:  # a new trace, sampled on its trace id's lower half (drawn first)
                low = getrandbits(64)
                if low >= bound:  # not recorded: its context passed on to the handler's sends
                    token = set_context(in_context(root()))
                    try:
                        return await handler(message)
                    finally:
                        reset_context(token)
                trace, parent = ((getrandbits(64) | 1) << 64 | low).to_bytes(16), b""
            request, sender = message.kind is _REQUEST, message.sender
            ids = (getrandbits(128) | _TWO_SPANS).to_bytes(16)
            receive, handle_id = trace + ids[:8], ids[8:]
            spec = specs.get((request, sender)) or spec_of(request, sender)
            if logs:
                _logs.bind(trace_id=trace.hex())
            values = get_context()
            if type(values) is Passing:  # the node's tasks: HANDLING is its span
                token, reset = HANDLING.set(trace + handle_id + b"\x01"), HANDLING.reset
            else:  # a task outside it: the span set in OpenTelemetry's context
                span = _new(Handling)
                span.data = trace + handle_id + b"\x01"
                token, reset = set_context(Context({**values, SPAN_KEY: span}) if values
                                           else Context({SPAN_KEY: span})), reset_context
            # A request's receipt is ended by its reply (_replied), in this task.
            state: list[Any] | None = None
            if request:
                state = [spec, receive, parent, 0, number, message.attempt, None, None, None]
                state[8] = _RECEIPT.set(state)
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
                reset(token)
                if state is None:
                    add((spec, receive, parent, start, end, failed, number, message.attempt,
                         handle, handle_id, start, end, error))
                else:
                    state[3], state[6], state[7] = start, (handle, handle_id, start, end,
                                                           error), failed

        return receipt

    def _replied(self, reply: Callable[..., Awaitable[None] | None]
                 ) -> Callable[..., Awaitable[None] | None]:
        add, getrandbits, clock = self._batcher.add, random.getrandbits, time.time_ns
        table, known = self._batcher.specs, self._batcher.known
        specs: dict[str, int | Spec] = {}

        def answer_of(ref: int | Spec) -> int | Spec:
            name = (table[ref] if isinstance(ref, int) else ref).name.removeprefix("receive ")
            answer = specs.get(name)
            if answer is None:
                answer = Spec(f"reply {name}", SpanKind.INTERNAL, {})
                if len(specs) < _PARENTS:
                    answer = specs[name] = known(answer)
            return answer

        def done(state: list[Any], start: int) -> None:
            spec, receive, parent, received, number, attempt, handled, error, _ = state
            end = clock()
            add((spec, receive, parent, received, end, error, number, attempt, *handled,
                 answer_of(spec), (getrandbits(64) | 1).to_bytes(8), start, end))

        async def waited(waiting: Awaitable[None], state: list[Any], start: int) -> None:
            try:
                await waiting
            finally:
                done(state, start)

        @functools.wraps(reply)
        def replied(*args: Any, **kwargs: Any) -> Awaitable[None] | None:
            state = _RECEIPT.get()
            if state is None or state[6] is None:  # not a recorded receipt's reply
                return reply(*args, **kwargs)
            try:
                _RECEIPT.reset(state[8])  # the task's context as it was
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
