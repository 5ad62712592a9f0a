"""App messaging on top of channels: mailboxes and handlers in, replies matched.

The node picks the channel. The dispatcher's send side (an app's ``send``/``request``/
``publish`` as frames) is its base class, :class:`~._outgoing.Outgoing`; this module
routes incoming messages by topic into the owning app's mailbox, runs the handler and
answers a request with its result (or with the error it raised), and hands replies back
to the request waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from p2phost_sdk import (
    App,
    CodecError,
    ConnectionClosed,
    MessageKind,
    RemoteError,
)

from .._errors import WireError
from .._limited import LimitedLogs, WarnedOnce
from ..wire._channel import Channel
from ..wire._envelope import ANSWER, RAW, VERSION, Envelope, Kind, encode
from ..wire._said import said
from ._apps import AppMailboxes, Process, lifecycle_call
from ._mailbox import serving_peer
from ._outgoing import Outgoing
from ._peers import answer_on
from ._received import Asked, Received
from ._routes import AckedDelivery, TraceHook, Work, allowed
from ._stats import DeliveryStats, Tally

log = logging.getLogger("p2phost.node")
_monotonic, _time, _new = time.monotonic, time.time, object.__new__

#: The channel to answer ``peer`` on when the request's own channel is gone, if any.
ReplyChannel = Callable[[str], Channel | None]
#: Records one handled message's mailbox wait and handler duration.
Observe = Callable[[float, float, float], None]
_MESSAGE, _REQUEST = MessageKind.MESSAGE, MessageKind.REQUEST
# The wire kinds a reply takes, as constants: an enum member looked up on its class
# costs a Python-level __getattr__ hook (EnumType's) each time, on the round trip's path.
_REPLY_KIND, _ERROR_KIND = Kind.REPLY, Kind.ERROR
_pack_answer = ANSWER.pack
_writer_turn = asyncio.sleep  # (0: one turn of the loop)
RAW_TYPE = RAW.decode()


class Dispatcher(Outgoing):
    """Messages between the node's channels and its apps."""

    def __init__(self, apps: Sequence[App], *, local_peer_id: str, max_frame_size: int,
                 reply_channel: ReplyChannel, ids: Iterator[int], stats: DeliveryStats,
                 delivery: AckedDelivery | None = None) -> None:
        self.local_peer_id = local_peer_id
        self.max_frame_size = max_frame_size
        super().__init__()
        self._reply_channel = reply_channel
        self._apps = AppMailboxes(apps, self._process, self)
        #: The mailboxes run plain items themselves (see start): False once processing
        #: is wrapped, and then no message is put in a mailbox as its own item.
        self._direct = True
        self.routes = self._apps.routes  # the same dict: read per message, no call between
        self._ids = ids
        self.stats = stats
        self._tallies = stats.tallies
        # (kind, topic) -> the frame's header around its ids, packed once.
        self._headers: dict[tuple[Kind, str], tuple[bytes, bytes]] = {}
        self._message_headers: dict[str, tuple[bytes, bytes]] = {}
        self._request_headers: dict[str, tuple[bytes, bytes]] = {}
        # (peer, topic) pairs already said to be dropped, the most recent last (bounded:
        # a peer making up topics must not grow it).
        self._warned = WarnedOnce()
        # A line per new pair, limited per peer and reason: made-up topics fill no log.
        self._drops = LimitedLogs(log, "dropped topics", burst=5)
        self._refusals = LimitedLogs(log, "allow= predicate failures", level=logging.ERROR)
        # A peer causes one per message: rate-limited per peer and topic (the first of a
        # window with its traceback; the "failed" counter counts every one).
        self._failures = LimitedLogs(log, "handler failures")
        # Acknowledged delivery: its messages take their own path from on_message, and
        # ACKs go to it.
        self._delivery = delivery
        self._acknowledged = delivery.acknowledged if delivery is not None else frozenset()
        #: Traces (docs/operations.md), set by the node when OpenTelemetry is on.
        self.tracer: TraceHook | None = None
        #: Metrics on: topic -> what observes a timed message (queued, started, ended:
        #: ``time.monotonic``), called by :meth:`_process` itself (a wrapper around each
        #: handler would cost a coroutine per message) for the items the route's
        #: ``stamp`` stamped (every route with a stamp has one here). Empty: metrics off.
        self.timed: dict[str, Observe] = {}

    def add_route(self, app: App, topic: str,
                  handler: Callable[[Any], Awaitable[Any]]) -> None:
        """Route ``topic`` to ``handler`` through ``app``'s mailbox while the node runs
        (a library program's late handler)."""
        self._apps.add_route(app, topic, handler)

    @property
    def topics(self) -> list[str]:
        """The topics this node's apps handle."""
        return sorted(self.routes)

    @property
    def acknowledged(self) -> frozenset[str]:
        """The topics acknowledged delivery takes (their messages do not come here)."""
        return self._acknowledged

    def wrap_processing(self, wrap: Callable[[Process], Process]) -> None:
        """Put ``wrap(process)`` in place of what each app's mailbox runs per item: for
        what must see the whole of it (the handler, the reply, the failure's log line).
        Before any message arrives (the node's constructor): from then on no message is
        queued as its own item (a simple item: see :meth:`received`), which ``process``
        could not take."""
        self._apps.wrap_processing(wrap)
        self._direct = False

    def mailboxes(self) -> dict[str, dict[str, int]]:
        """Each app's mailbox: messages queued or being handled, and its size."""
        return self._apps.sizes()

    def received(self, channel: Channel, kind: int, message_id: int, deadline: int,
                 topic: str, body: bytes, ack: Callable[[], None] | None,
                 trace: bytes = b"") -> Awaitable[None] | None:
        """A MESSAGE or REQUEST as the channel's reader unpacked it (no sender, recipient
        or content type in it): into the owning app's mailbox (an awaitable when full).
        ``trace``: the sender's trace context (the reader's ``on_traced``, this method
        too: one call per traced frame, not one more)."""
        route = self.routes.get(topic)
        if route is None or route.allow is not None or topic in self._acknowledged:
            return self.on_message(channel, Envelope(
                Kind.REQUEST if kind else Kind.MESSAGE, message_id, topic, body,
                deadline=deadline, trace=trace), ack)
        peer = channel.peer_id
        # stats.message_in inline: the call costs 3% of a one-way message (instructions.py);
        # the channel's tally of the topic: no (topic, peer) key to build and hash.
        tally = channel.tallies.get(topic) or self.stats.tally_of(channel.tallies, topic, peer)
        tally.received += 1
        tally.bytes_received += (size := len(body))
        codec = channel.codec
        # received(...) and Work(...), inline: two calls less per message (every field
        # of both is set here: see _received.Received and Work).
        message = _new(Asked if kind else Received)
        message._number = message_id
        message.kind = _REQUEST if kind else _MESSAGE
        message.sender = peer
        message.topic = topic
        message.body = codec.decode(body)
        message.correlation_id = None
        message.content_type = channel.content_type
        message.attempt = 1
        message.store = None
        if trace:  # the sender's trace context
            if (tracer := self.tracer) is None:
                trace = b""  # not tracing here: nothing passes it on
            elif trace[24] & 1 or tracer.decides:  # (else an unsampled sender's: passed on)
                trace = tracer.incoming(peer, message_id, trace)  # b"": to be recorded
        # Metrics on: the message's queued time when the metrics time it (about one in
        # ``timing-sample``), else 0.0 (not route.stamp(None): an attribute read less).
        queued = 0.0 if (stamp := route.stamp) is None else stamp(None)
        if not (trace or queued) and ack is None and self._direct and (kind or not deadline):
            # A simple item: the message is its own (no Work: nothing around its handler,
            # which the mailbox's task calls and counts itself, and a request's answer;
            # see _mailbox.Direct). With metrics on too: only a timed message needs
            # _process, which reads the clock.
            message._call = route.handler
            message._tally = tally
            message._size = size  # what it counts against the mailbox's bytes
            if kind:  # a request: what answering it takes (see _received.Asked)
                message._channel = channel  # type: ignore[attr-defined]
                message._reply_to = message_id  # type: ignore[attr-defined]
                message._deadline = deadline  # type: ignore[attr-defined]
            if route.mailbox.try_put(peer, message):  # type: ignore[arg-type]
                return None
            return route.mailbox.put(peer, message)  # type: ignore[arg-type]
        item = _new(Work)
        item.call = route.handler
        item.message = message
        item.message_id = message_id
        item.deadline = deadline
        item.channel = channel
        item.ack = ack
        item.counted = False
        item.queued = queued
        item.plain = ack is None
        item.trace = b""
        item.token = None
        item._size = size
        if trace:  # not recorded: the bare handler runs, its sends pass the context on
            item.call, item.trace = route.bare or route.handler, trace
        item.tally = tally
        if route.mailbox.try_put(peer, item):
            return None
        return route.mailbox.put(peer, item)

    #: The reader's ``on_traced`` (a frame carrying its sender's trace context).
    received_traced = received

    def on_message(self, channel: Channel, envelope: Envelope,
                   ack: Callable[[], None] | None) -> Awaitable[None] | None:
        """A MESSAGE or REQUEST: into the owning app's mailbox (an awaitable when full)."""
        peer = channel.peer_id
        self.stats.message_in(envelope.topic, peer, len(envelope.body))
        if envelope.sender and envelope.sender != peer:
            raise WireError(f"envelope sender {envelope.sender} is not the connection's peer")
        if envelope.recipient and envelope.recipient != self.local_peer_id:
            raise WireError(f"envelope recipient {envelope.recipient} is not this node")
        route = self.routes.get(envelope.topic)
        if route is None or (route.allow is not None and not allowed(route, peer, self._refusals)):
            self._unrouted(channel, envelope, route is not None)
            if ack is not None:
                ack()
            return None
        tracer, trace = self.tracer, b""
        if envelope.trace and tracer is not None:
            # Acknowledged delivery's runs (retries too) look the context up: kept.
            acked = envelope.topic in self._acknowledged and envelope.kind is Kind.MESSAGE
            trace = tracer.incoming(peer, envelope.message_id, envelope.trace, acked)
        if envelope.topic in self._acknowledged and envelope.kind is Kind.MESSAGE:
            assert self._delivery is not None
            return self._delivery.receive(channel, envelope, ack, route)
        request = envelope.kind is Kind.REQUEST
        if envelope.content_type == RAW_TYPE:  # a raw body: handed over as it came
            body, content_type = envelope.body, RAW_TYPE
        else:
            body, content_type = channel.codec.decode(envelope.body), channel.codec.content_type
        message = Received(
            envelope.message_id,
            MessageKind.REQUEST if request else MessageKind.MESSAGE,
            peer, envelope.topic, body, None, content_type,
        )
        item = Work(route.handler, message, envelope.message_id, envelope.deadline, channel,
                    ack, _size=len(envelope.body))
        if trace:  # not recorded: the bare handler runs, its sends pass the context on
            item.call, item.trace = route.bare or route.handler, trace
        if (stamp := route.stamp) is not None:  # not route.stamp(item): a method lookup
            stamp(item)
        if route.mailbox.try_put(peer, item):
            return None
        return route.mailbox.put(peer, item)

    def _unrouted(self, channel: Channel, envelope: Envelope, forbidden: bool = False) -> None:
        if forbidden:
            text = (f"peer {channel.peer_id} is not allowed to call topic {envelope.topic!r} "
                    "on this node (the app's handler(allow=...))")
        else:
            text = f"no app on this node handles topic {envelope.topic!r}"
        self.stats.drop(envelope.topic, "the sender is not allowed" if forbidden
                        else "no app handles the topic", channel.peer_id)
        if envelope.kind is Kind.REQUEST:
            channel.post(encode(Kind.ERROR, next(self._ids), body=text.encode(),
                                correlation_id=envelope.message_id))
        elif self._warned.first(channel.peer_id, envelope.topic):
            self._drops.log((channel.peer_id, "not allowed" if forbidden else "no app"),
                            "dropping messages from %s: %s", channel.peer_id, text)

    def on_reply(self, channel: Channel, envelope: Envelope) -> None:
        """A REPLY or ERROR: to the request waiting for it; an ACK to acknowledged delivery."""
        if envelope.kind is Kind.ACK:
            if self._delivery is not None:
                self._delivery.on_ack(channel, envelope)
            return
        self.replied(channel, envelope.kind, envelope.correlation_id, envelope.body)

    def replied(self, channel: Channel, kind: int, correlation_id: int, body: bytes) -> None:
        """A REPLY (or an ERROR when ``kind`` says so) to the request waiting for it."""
        # Looked up before it is taken: a reply from another peer (forged, with an id it
        # guessed) must leave the request waiting, and its timer running.
        entry = self._pending.get(correlation_id)
        if entry is None or entry[0] != channel.peer_id:
            log.debug("a reply from %s matches no waiting request (late?)", channel.peer_id)
            return
        del self._pending[correlation_id]
        peer, topic, reply, _, _ = entry
        # Counted as a request's receiver counts it: a reply is a message received (inline,
        # as in received(): no call per reply).
        tally = channel.tallies.get(topic) or self.stats.tally_of(channel.tallies, topic, peer)
        tally.received += 1
        tally.bytes_received += len(body)
        if reply.done():
            return
        if kind == _ERROR_KIND:
            # The peer's words: shown by the caller and the CLI, so cut as any a peer sends.
            reply.set_exception(RemoteError(peer, topic, said(body)))
            return
        try:
            reply.set_result(channel.codec.decode(body))
        except CodecError as exc:
            reply.set_exception(CodecError(f"the reply from {peer} is not valid: {exc}"))
            raise

    def lifecycle(self, peer_id: str, method: str, *args: Any) -> None:
        """Call ``App.method(*args)`` through each app's mailbox, in order with the
        peer's messages (``on_peer_connected`` first, ``on_peer_lost`` last)."""
        self._apps.lifecycle(peer_id, method, *args)

    def busy_with(self, peer_id: str) -> bool:
        """Whether a request to ``peer_id`` waits for its reply, or a mailbox holds or
        handles something of its (a request to answer, a message to acknowledge)."""
        return self.waits_on(peer_id) or self._apps.busy_with(peer_id)

    async def settled(self, channel: Channel, replies: list[asyncio.Future[Any]],
                      timeout: float) -> None:
        """Wait up to ``timeout`` seconds for ``replies`` (``replies_due`` as this node said
        goodbye on ``channel``), then while a mailbox holds or handles a message of the
        peer's (a request to answer) and ``channel`` is open and where the answer would
        go: once the peer has another connection of the same session, the answers go
        there (``answer_on``). Asked on behalf of a handler of the peer's own messages
        (``serving_peer``: it disconnects its sender), the mailboxes are not waited for:
        they wait for that handler."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if replies:
            await asyncio.wait(replies, timeout=timeout)
        peer, pause = channel.peer_id, 0.005
        if serving_peer.get() == peer:
            return
        # Polled, not signalled: only a connection being retired asks, and a signal
        # would cost the mailbox's path a look per item. Mostly nothing is left by now.
        while self._apps.busy_with(peer) and not channel.ended \
                and answer_on(channel, self._reply_channel(peer)) is channel \
                and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, 0.1)

    def peer_gone(self, peer_id: str, reason: str) -> None:
        """The peer's last channel ended."""
        self.fail_pending(peer_id, f"the connection was lost: {reason}")
        self._apps.peer_gone(peer_id)

    def flush_logs(self) -> None:
        """Log the counts the rate-limited lines held back."""
        for limited in (self._failures, self._drops, self._refusals):
            limited.flush()

    async def drain(self, timeout: float, drain_timeout: float | None = None) -> None:
        """Handle what the mailboxes hold (up to ``timeout``), then stop them
        (``drain_timeout``: see :meth:`Apps.drain`)."""
        await self._apps.drain(timeout, drain_timeout)

    #: The simple items' types (see _mailbox.Direct): a plain one-way message and a
    #: plain request as their own items, put by :meth:`received`.
    simple = Received
    asked = Asked

    def answer(self, peer: str, request: Asked, result: Any) -> Awaitable[None] | None:
        """A simple request's handler returned ``result``: the answer (an awaitable while
        the outbox has no room), then the request counted as handled."""
        channel, request._channel = request._channel, None
        tally = request._tally
        waiting = self._reply(peer, channel, request._reply_to, tally, _REPLY_KIND, result)
        tally.handled += 1
        return waiting

    def expired(self, peer: str, request: Asked) -> None:
        """A simple request whose requester stopped waiting before its handler could
        start: dropped unanswered (as :meth:`_process` drops one), and counted."""
        request._channel = None
        log.debug("skipping an expired %r request from %s", request.topic, peer)
        self.stats.drop(request.topic, "request expired before its handler", peer)

    def failed(self, peer: str, message: Received,
               error: Exception | asyncio.CancelledError) -> Awaitable[None] | None:
        """A simple item's handler raised ``error``: logged and counted, and a request
        answered with the error (an awaitable while the outbox has no room)."""
        self._failed(peer, message, error)
        self.stats.add(message.topic, "failed", 1, peer)
        if type(message) is not Asked:
            return None
        channel, message._channel = message._channel, None
        return self._reply(peer, channel, message._reply_to, message._tally, _ERROR_KIND,
                           _describe(error))

    def start(self, item: Work) -> Awaitable[Any] | None:
        """A plain message's or request's handler call, run by the mailbox with no
        coroutine of :meth:`_process` around it; None for anything else (lifecycle
        calls, acknowledged or timed messages, an expired request: :meth:`_process`)."""
        if not item.plain or item.queued:
            return None
        deadline = item.deadline
        if deadline and deadline < _time() * 1000:
            return None  # _process drops it, and says why
        if item.trace:  # tracing: what the handler sends carries the sender's context
            item.token = self.tracer.enter(item.trace)  # type: ignore[union-attr]
        call = item.call  # (a local: see Channel.try_post)
        try:
            awaitable = call(item.message)
        except (Exception, asyncio.CancelledError) as exc:  # not an async def: finish
            # reports it (a CancelledError raised as it is called is the handler's own:
            # its task cannot be cancelled before an await; left to rise here, it ended
            # the mailbox's task, and the request went unanswered)
            return _raise(exc)
        if awaitable is None:  # a plain function's result: None here means "not
            # started", and _process would call the handler a second time
            return _raise(TypeError("object NoneType can't be used in 'await' expression"))
        return awaitable

    def finish(self, peer: str, item: Work, result: Any,
               error: Exception | asyncio.CancelledError | None) -> Awaitable[None] | None:
        """A started item's handler returned ``result`` (or raised ``error``): a
        request answered (an awaitable while the outbox has no room), the outcome counted."""
        if (token := item.token) is not None:
            # Tracing: the context the handler ran in is left (nothing after the handler
            # reads it: an answer carries no trace context).
            item.token = None
            self.tracer.leave(token)  # type: ignore[union-attr]
        message = item.message
        assert message is not None
        if error is None:
            # The reply first: counting it is not on the requester's round trip. One
            # tally counts both: the reply sent and the message handled (inline, as in
            # received(): no call per message).
            tally = item.tally or self._tallies.get((message.topic, peer)) \
                or self.stats.tally(message.topic, peer)
            waiting = None if message.kind is not _REQUEST else \
                self._reply(peer, item.channel, item.message_id, tally, _REPLY_KIND, result)
            if not item.counted:  # (acknowledged delivery counts its own)
                tally.handled += 1
            return waiting
        self._failed(peer, message, error)
        if not item.counted:
            self.stats.add(message.topic, "failed", 1, peer)
        if message.kind is _REQUEST:
            return self._reply(peer, item.channel, item.message_id,
                               self.stats.tally(message.topic, peer), _ERROR_KIND,
                               _describe(error))
        return None

    def _failed(self, peer: str, message: Any,
                exc: Exception | asyncio.CancelledError) -> None:
        # (_describe: what the requester is told, made whatever the exception's str does)
        self._failures.log((peer, message.topic), "the %r handler failed on message %s from "
                           "%s: %s", message.topic, message.id, peer, _describe(exc),
                           exc_info=exc)

    async def _process(self, peer: str, item: Work) -> None:
        # What the mailbox runs for an item start() does not take: a lifecycle call,
        # an expired request, an acknowledged or timed (metrics) message.
        message, ack = item.message, item.ack
        # Tracing: what the handler (and its reply) sends carries the sender's context.
        token = None if not item.trace else self.tracer.enter(item.trace)  # type: ignore[union-attr]
        try:
            if message is None:
                await lifecycle_call(item.call)
                return
            if item.deadline and item.deadline < _time() * 1000:
                log.debug("skipping an expired %r request from %s", message.topic, peer)
                self.stats.drop(message.topic, "request expired before its handler", peer)
                return
            queued = item.queued  # 0.0: not timed (metrics off, or not sampled)
            started = _monotonic() if queued else 0.0
            try:
                result = await item.call(message)
            except Exception as exc:
                if queued:
                    self.timed[message.topic](queued, started, _monotonic())
                waiting = self.finish(peer, item, None, exc)
            except asyncio.CancelledError as cancelled:
                # Not this task's cancellation (a close, a lost peer: those go on) but
                # a future someone else cancelled: the handler failed (see _mailbox).
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                if queued:
                    self.timed[message.topic](queued, started, _monotonic())
                waiting = self.finish(peer, item, None, cancelled)
            else:
                if queued:
                    self.timed[message.topic](queued, started, _monotonic())
                waiting = self.finish(peer, item, result, None)
            if waiting is not None:
                await waiting
        finally:
            if token is not None:
                self.tracer.leave(token)  # type: ignore[union-attr]
            if ack is not None:
                ack()  # done with it: a medium that redelivers may now forget it

    def _reply(self, peer: str, channel: Channel | None, message_id: int, tally: Tally,
               kind: Kind, value: Any) -> Awaitable[None] | None:
        """Answer a request: at once when the outbox has room, else an awaitable. The
        reply is counted as sent in ``tally``, the request's (its topic, its peer)."""
        if channel is None or channel.ended:
            current = self._reply_channel(peer)
            # Another session's channel is not the requester's: the peer restarted, and
            # its new requests may reuse this one's id (see answer_on).
            if current is None or (channel is not None
                                   and current.hello.session != channel.hello.session):
                log.debug("dropping a reply to %s: the peer is gone or restarted", peer)
                return None
            channel = current
        elif not channel.usable:
            channel = answer_on(channel, self._reply_channel(peer))
        try:
            body = channel.codec.encode(value) if kind is _REPLY_KIND else str(value).encode()
        except CodecError as exc:
            kind, body = Kind.ERROR, f"the handler's result cannot be encoded: {exc}".encode()
        # (answer_frame, inline: the answer is on the round trip's path)
        frame = _pack_answer(VERSION, kind, next(self._ids), message_id) + body
        if len(frame) > channel.frame_limit:
            frame = encode(Kind.ERROR, next(self._ids), correlation_id=message_id,
                           body=f"the reply is {len(frame)} bytes, over the maximum frame "
                                f"size of {channel.frame_limit}".encode())
        if channel.try_post(frame):
            tally.sent += 1
            tally.bytes_sent += len(frame)
            if channel.run_waiting:
                # Answers to many requests in flight that the transport did not take
                # as they queued (no try_send_many, or its buffer held some): the
                # mailbox lets the loop turn once, so the writer sends them while the
                # rest are handled and the peer works on them meanwhile.
                channel.run_waiting = False
                return _writer_turn(0)
            return None
        return _send_reply(channel, frame, peer, tally)


async def _send_reply(channel: Channel, frame: bytes, peer: str, tally: Tally) -> None:
    try:
        await channel.send(frame)
    except ConnectionClosed:
        log.debug("dropping a reply to %s: the connection closed", peer)
        return
    tally.sent += 1
    tally.bytes_sent += len(frame)


async def _raise(exc: Exception | asyncio.CancelledError) -> None:
    raise exc


def _describe(exc: Exception | asyncio.CancelledError) -> str:
    """What the requester's RemoteError says about a handler's failure."""
    if isinstance(exc, asyncio.CancelledError):
        return ("CancelledError: the handler was cancelled (something it awaited was "
                "cancelled while its own task was not; fix: catch that in the handler)")
    try:
        text = str(exc)
    except Exception:  # (else the request went unanswered, its requester left waiting)
        text = "(no message: str() of the exception raised)"
    if isinstance(exc, TimeoutError) and not text:
        text = "the handler timed out (an asyncio.timeout in it expired)"
    return f"{type(exc).__name__}: {text}"
