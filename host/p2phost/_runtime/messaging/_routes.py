"""What an app's mailbox holds, and where a topic's messages go (who may call it, and
acknowledged delivery as the dispatcher sees it)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from p2phost_sdk import Message

from ..wire._channel import Channel
from ._mailbox import Mailbox
from ._stats import Tally

if TYPE_CHECKING:
    from .._limited import LimitedLogs
    from ..wire._envelope import Envelope

log = logging.getLogger("p2phost.node")


class TraceHook(Protocol):
    """Traces, as the dispatcher sees them (p2phost._observability._otel.Tracing)."""

    #: False when a trace its sender did not sample is never recorded here (a
    #: parent-based sampler): such a message's context is passed on as it came, with no
    #: call to :meth:`incoming` (which checks the context before recording anything).
    decides: bool

    def outgoing(self, channel: Channel) -> bytes:
        """The trace context to put in a frame to ``channel`` (empty: none)."""

    def incoming(self, peer: str, message_id: int, trace: bytes, keep: bool = False) -> bytes:
        """A message carrying the trace context ``trace`` arrived from ``peer``: what its
        handler's sends pass on when it is not recorded (empty: its receipt is recorded,
        or the context is not valid, and the route's handler takes it as it comes).
        ``keep``: kept for the route's handler whether recorded or not, nothing returned
        (acknowledged delivery's runs)."""

    def enter(self, trace: bytes, /) -> Any:
        """Make ``trace`` what the handler about to run passes on (a token to reset)."""

    def leave(self, token: Any, /) -> None:
        """Undo :meth:`enter` once the handler is done."""

    def remember(self, message_id: int) -> None:
        """Keep the current trace context for a message the outbox sends later."""

    def recall(self, message_id: int, channel: Channel) -> bytes:
        """The trace context kept for ``message_id``, for a frame to ``channel``."""


@dataclass(slots=True)
class Work:
    """One item of an app's mailbox: a message for its handler, or a lifecycle call.

    ``Dispatcher.received`` (the hot receive path) sets every field itself, without
    this ``__init__``: a field added here must be set there too."""

    #: The handler (called with ``message``), or a lifecycle call (no arguments).
    call: Callable[..., Awaitable[Any]]
    message: Message | None = None
    message_id: int = 0
    #: The request's deadline (ms since the epoch), 0 for none.
    deadline: int = 0
    #: The channel it came on (replies go back on it while it is open).
    channel: Channel | None = None
    #: The medium's acknowledgement, called once the item is processed.
    ack: Callable[[], None] | None = None
    #: Acknowledged delivery's: it counts the outcome itself.
    counted: bool = False
    #: When it was queued (``time.monotonic``), set only on a message the metrics time
    #: (the route's ``stamp``): its mailbox wait and handler duration are observed.
    queued: float = 0.0
    #: A MESSAGE or REQUEST with nothing to do around its handler but check its
    #: deadline, count it and answer a request (no ack): the mailbox may run it
    #: directly (``Dispatcher.start``/``finish``) unless the metrics time it (``queued``).
    plain: bool = False
    #: The message's body length in bytes (0 for a lifecycle call): what it counts
    #: against the mailbox's ``max_bytes``.
    _size: int = 0
    #: Tracing: the context of a sender whose trace is not recorded, which the handler
    #: (``call``: the route's bare one) passes on to what it sends, and nothing else.
    trace: bytes = b""
    #: Tracing: what resets the context ``trace`` was made with while the handler runs.
    token: Any = None
    #: The counters of the message's topic and peer, as its receive path found them
    #: (a ``Tally`` is never replaced: the handled count goes there with no lookup).
    tally: Tally | None = None


@dataclass(frozen=True)
class Route:
    """The handler of one topic and the mailbox of the app that owns it."""

    handler: Callable[[Message], Awaitable[Any]]
    mailbox: Mailbox[Work]
    #: Who may call the topic (``handler(allow=...)``); None: anyone.
    allow: Callable[[str], bool] | None = None
    #: Metrics on: called for each message put in the mailbox, it returns the time
    #: (``time.monotonic``) for the ones the metrics time, 0.0 for the others, and stamps
    #: it as ``queued`` on the item given, if any (a plain one-way message not timed is
    #: put with no ``Work``: p2phost._observability._instrument). None: metrics off.
    stamp: Callable[[Work | None], float] | None = None
    #: Tracing on: the handler without the tracer's receipt around it, for a message
    #: whose trace is not recorded (``Work.trace``). None: ``handler`` is bare.
    bare: Callable[[Message], Awaitable[Any]] | None = None


class AckedDelivery(Protocol):
    """Acknowledged delivery, as the dispatcher sees it: its messages and ACKs go there."""

    @property
    def acknowledged(self) -> frozenset[str]:
        """The topics whose MESSAGEs go to :meth:`receive`."""

    def receive(self, channel: Channel, envelope: Envelope, ack: Callable[[], None] | None,
                route: Route) -> Awaitable[None] | None:
        """A MESSAGE on an acknowledged topic (an awaitable when the mailbox is full)."""

    def on_ack(self, channel: Channel, envelope: Envelope) -> None:
        """An ACK frame."""


def allowed(route: Route, peer: str, failures: LimitedLogs) -> bool:
    """Whether ``peer`` may call the route's topic (its ``handler(allow=...)``); a failing
    predicate refuses, and says so in ``failures`` (a node's: once per message a peer
    sends, so a line per peer and window, the first with its traceback)."""
    assert route.allow is not None
    try:
        return bool(route.allow(peer))
    except Exception as exc:
        failures.log((peer,), "an app's allow= predicate failed; refusing %s", peer,
                     exc_info=exc)
        return False

