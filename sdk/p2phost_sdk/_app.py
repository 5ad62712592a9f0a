"""The app kind: what the application does with messages.

An app declares handlers per topic with :func:`handler`. The host gives each app its own
bounded mailbox and calls its handlers one message at a time per peer, in the order that
peer sent them among topics of one delivery mode (acknowledged and at-most-once messages
travel apart, so there is no order between the two), so handler code needs no locks for
per-peer state. A handler's return
value is the reply to a request; an exception becomes an error reply, never a crash.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from ._authorization import Allow
from ._authorization import allow as _allow
from ._delivery import Delivery, Store
from ._models import Contract, contract_of, to_builtins
from ._trace import TraceContext


class MessageKind(enum.StrEnum):
    """What an envelope is for."""

    MESSAGE = "message"
    REQUEST = "request"
    REPLY = "reply"
    ERROR = "error"
    ACK = "ack"


@dataclass(slots=True, unsafe_hash=True)
class Message:
    """A message as a handler sees it (each handler call gets its own: treat it as read-only).

    Not a frozen dataclass: a node builds one per received message, and a frozen
    dataclass costs five times as much to build (it sets every field through
    ``object.__setattr__``).
    """

    id: str
    kind: MessageKind
    sender: str
    topic: str
    body: Any
    correlation_id: str | None = None
    content_type: str = ""
    #: Which run of the handler this is (1 = the first; more after it raised).
    attempt: int = 1
    #: The app's durable state, committed with the message: set for acknowledged topics
    #: (see :class:`~p2phost_sdk.Store`), None otherwise.
    store: Store | None = None


@dataclass(frozen=True)
class PeerInfo:
    """A connected peer: its proven id, where it is, and the app topics it handles."""

    peer_id: str
    address: str
    topics: frozenset[str] = frozenset()
    codec: str = ""
    #: How the connection is secured: the security plugin's protocol (``noise``, ``tls``),
    #: ``sealed`` on broker and database media, ``none`` when it is not.
    security: str = ""


class Messenger(Protocol):
    """The node, as an app sees it."""

    @property
    def peer_id(self) -> str:
        """This node's peer id."""
        ...

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        ...

    async def connect(self, address: str) -> str:
        """Dial ``address`` (or reuse a connection); returns the peer id."""
        ...

    async def send(self, peer: str, topic: str, body: Any, *, key: str | None = None) -> None:
        """Deliver ``body`` on ``topic`` to ``peer`` (a peer id or an address), no reply.

        On an acknowledged topic it returns once the message is in the node's durable
        outbox, and ``key`` (an idempotency key) makes sends with the same key one
        message: a sender that restarts and sends again does not duplicate it.
        """
        ...

    async def request(self, peer: str, topic: str, body: Any, *,
                      timeout: float | None = 10.0) -> Any:
        """Send a request and return the reply body.

        Raises ``RequestTimeout`` after ``timeout`` seconds, ``RemoteError`` when the
        remote handler failed, ``PeerUnavailable`` when the peer cannot be reached.
        ``timeout=None`` (or ``math.inf``) waits without a deadline, until the reply
        comes or the peer goes away; a timeout that is no number of seconds (nan) is
        refused with the host's ``UserError`` and its fix.
        """
        ...

    async def publish(self, topic: str, body: Any) -> int:
        """Send to every connected peer that handles ``topic``; returns how many."""
        ...

    async def disconnect(self, peer: str, *, reason: str = "closed by an app") -> bool:
        """Close the connections to ``peer`` (a peer id) after a goodbye that gives
        ``reason``, and what was queued on them is sent first; False when none was open.
        It returns once the work on them is done: the peer's answering goodbye came (so a
        request it sent before it saw ours has arrived: within the node's handshake
        timeout, 5 s unless set), the peer's requests are answered and this node's
        requests with a deadline made before have their replies (within its drain
        timeout, 10 s unless set); then 1 s at most for what is queued, and 2 s at most
        for the peer to leave ``peers()``. Meanwhile a request to the peer's id fails
        as "not connected"; one to its address dials a new connection. A timeout around
        it cancels the wait, not the closing. From a handler of the peer's own messages
        (or what it starts) it does not wait for the peer's mailboxes, which wait for
        that handler: neither its own answer nor one to what the peer sent after that
        message goes out.
        A peer that discovery or ``[node] connect`` keeps connected is dialled again; one
        that acknowledged messages wait for is dialled again for them only once the
        reconnect backoff's maximum (10 s) has passed."""
        ...

    def trace_context(self, root: str = "") -> TraceContext | None:
        """The trace a send made here and now would continue (the running handler's
        span, or a span app code made current), for a send made later from another task:
        ``with context.carry(): await node.send(...)`` there continues it (a task the app
        starts and feeds from its handlers, e.g. a batching or forwarding one, has no
        handler's span of its own). ``root``: when there is no trace here, begin one with
        a span of that name on this node (sampled as ``OTEL_TRACES_SAMPLER`` says), so
        that the sends that follow share it. None when the node does not trace, or there
        is no trace and no ``root``. Costs a call that returns None when not tracing."""
        ...

    async def dead_letter(self, topic: str, body: bytes, *, source: str, reason: str,
                          content_type: str = "") -> int:
        """Keep ``body``, a payload that never became a message (one from outside the
        network that does not decode), in the node's dead-letter store for ``topic``,
        where ``p2phost dead`` shows it; ``source`` says where it came from. Returns its
        id once it is committed (0 when the full store dropped it)."""
        ...


Handler = Callable[[Message], Awaitable[Any]]
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def handler(topic: str, *, delivery: Delivery | str | None = None,
            allow: Allow | None = None, model: type | None = None) -> Callable[[_F], _F]:
    """Mark ``async def method(self, message)`` of an :class:`App` as the handler of ``topic``.

    ``delivery`` is the topic's :class:`~p2phost_sdk.Delivery` (or just a mode's name,
    e.g. ``"at-least-once"``); at-most-once when not given. ``allow`` (peer ids, or a
    predicate over the caller's peer id) lets only those peers call it: see
    :func:`p2phost_sdk.allow`. ``model`` (a dataclass, msgspec Struct or pydantic model)
    is the body's contract: the handler gets ``message.body`` as an instance of it, a
    body that does not fit is refused naming the field (:class:`BodyInvalid`), and the
    node advertises the model's JSON Schema; raises :class:`ModelError` for another kind.
    """
    policy = None if delivery is None else Delivery.of(delivery)
    guard = None if allow is None else _allow(allow)
    contract = None if model is None else contract_of(model)

    def mark(func: _F) -> _F:
        if contract is not None:
            func = typed(func, contract, topic)
        func.__p2phost_topic__ = topic  # type: ignore[attr-defined]
        func.__p2phost_delivery__ = policy  # type: ignore[attr-defined]
        return func if guard is None else guard(func)

    return mark


def typed(func: _F, contract: Contract, topic: str) -> _F:
    """``func`` (a handler, its last argument the message) with its body checked against
    ``contract`` and converted first, and a model instance it returns made plain data."""

    @functools.wraps(func)
    async def checked(*args: Any) -> Any:
        *head, message = args
        body = contract.load(topic, message.body)
        result = await func(*head, dataclasses.replace(message, body=body))
        return to_builtins(result)

    checked.__p2phost_contract__ = contract  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]


class App:
    """Base class of app modules. Subclass, set ``name``, decorate handlers."""

    #: The app's name (defaults to the class name).
    name: ClassVar[str] = ""
    #: How many messages may wait in this app's mailbox before senders are slowed.
    mailbox_size: ClassVar[int] = 1024
    #: How many bytes of message bodies may wait in this app's mailbox before senders
    #: are slowed (as when ``mailbox_size`` messages wait): without it, a peer sending
    #: large messages to a slow handler could make the node hold ``mailbox_size`` times
    #: the largest frame. 64 MiB is far above what normal traffic queues (1,024 messages
    #: of 64 KiB); a single message larger than this is still taken when the mailbox is
    #: empty.
    mailbox_bytes: ClassVar[int] = 64 * 1024 * 1024
    #: Delivery of topics by name, for topics this app sends to (its handlers' own
    #: ``delivery=`` wins for the topics it handles).
    delivery: ClassVar[Mapping[str, Delivery | str]] = {}
    #: Also run in short-lived client nodes (``p2phost send``/``ping``), which reach peers
    #: but are never reached and receive only replies: for the app part of a transport's
    #: dialling (a relay). Apps are left out of client nodes otherwise.
    client: ClassVar[bool] = False

    node: Messenger

    def handlers(self) -> dict[str, Handler]:
        """The handlers of this app, by topic."""
        found: dict[str, Handler] = {}
        for attr in dir(type(self)):
            func = getattr(type(self), attr, None)
            topic = getattr(func, "__p2phost_topic__", None)
            if topic is not None:
                found[topic] = getattr(self, attr)
        return found

    def deliveries(self) -> dict[str, Delivery]:
        """The declared delivery of each topic: ``delivery`` and the handlers' marks."""
        found = {topic: Delivery.of(value) for topic, value in type(self).delivery.items()}
        for attr in dir(type(self)):
            policy = getattr(getattr(type(self), attr, None), "__p2phost_delivery__", None)
            if policy is not None:
                found[getattr(type(self), attr).__p2phost_topic__] = policy
        return found

    async def start(self, node: Messenger) -> None:
        """Called once the node runs; keep ``node`` to send messages."""
        self.node = node

    async def stop(self) -> None:
        """Called at shutdown, after the mailbox drained."""

    async def on_peer_connected(self, peer: PeerInfo) -> None:
        """Called when a peer connects."""

    async def on_peer_lost(self, peer: PeerInfo, reason: str) -> None:
        """Called when a peer's connection is gone."""
