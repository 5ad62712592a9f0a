"""A received message whose id string is made only when a handler asks for it.

A node builds a :class:`~p2phost_sdk.Message` for every message it receives, and most
handlers never read ``message.id``: formatting the 64-bit id as 16 hex digits for each
one cost about a tenth of a small message's receive path. ``Received`` keeps the number
and formats it on first use. It is a ``Message`` in every other way (same fields, same
``repr``, ``dataclasses.replace`` and equality with another received message work).
The hot receive path (``Dispatcher.received``) builds one field by field, with no
``__init__`` call: a field added to ``Message`` must be set there too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from p2phost_sdk import Message, MessageKind, Store

if TYPE_CHECKING:
    from ..wire._channel import Channel
    from ._stats import Tally

# The dataclass's slot for ``id``, used under the property below.
_ID: Any = Message.__dict__["id"]


class Received(Message):
    """A ``Message`` built from a frame: ``id`` may be given as the frame's number.

    A plain one-way message is its own mailbox item (no ``Work`` around it: one object
    per message, not two): ``_call`` is then its handler, ``_tally`` its topic's and
    peer's counters and ``_size`` its body's length, counted against the mailbox's bytes
    (see ``Dispatcher.received`` and ``_mailbox.Direct``; a plain request is an
    :class:`Asked`). None is a field: a message a handler keeps holds no channel or
    acknowledgement through them."""

    __slots__ = ("_call", "_number", "_size", "_tally")
    _call: Callable[[Message], Awaitable[Any]]
    _tally: Tally
    _size: int

    def __init__(self, id: str | int, kind: MessageKind, sender: str, topic: str,
                 body: Any, correlation_id: str | None = None, content_type: str = "",
                 attempt: int = 1, store: Store | None = None) -> None:
        # The same signature as Message's, so dataclasses.replace works.
        if type(id) is int:
            self._number = id
        else:
            _ID.__set__(self, id)
        self.kind = kind
        self.sender = sender
        self.topic = topic
        self.body = body
        self.correlation_id = correlation_id
        self.content_type = content_type
        self.attempt = attempt
        self.store = store

    @property  # type: ignore[override]
    def id(self) -> str:
        """The message id: 16 hex digits, as the sender's frame numbered it."""
        try:
            value: str = _ID.__get__(self, Message)
        except AttributeError:
            value = format(self._number, "016x")
            _ID.__set__(self, value)
        return value

    @id.setter
    def id(self, value: str) -> None:
        _ID.__set__(self, value)
        if hasattr(self, "_number"):  # the id given now is the one number_of reads
            del self._number

    def __reduce__(self) -> tuple[type[Message], tuple[Any, ...]]:
        # Pickled or copied, it becomes the plain Message it stands for.
        return Message, (self.id, self.kind, self.sender, self.topic, self.body,
                         self.correlation_id, self.content_type, self.attempt, self.store)


def number_of(message: Message) -> int:
    """``message``'s id as a number: a received message's frame number as it came, with
    no hex string made and parsed back on the way."""
    try:
        return message._number  # type: ignore[attr-defined, no-any-return]
    except AttributeError:
        return int(message.id, 16)


class Asked(Received):
    """A plain request as its own mailbox item (``Received``'s ``_call``, ``_tally`` and
    ``_size``, with what answering it takes): ``_channel``, the channel it came on, set
    to None once it is answered or dropped unanswered (expired, or its handler's task
    cancelled: a message a handler keeps then holds no channel);
    ``_reply_to``, its frame's number as it came (``id`` may be set by its handler);
    ``_deadline``, when the requester stops waiting (ms since the epoch, 0 for never).
    See ``Dispatcher.received`` and ``_mailbox.Direct``."""

    __slots__ = ("_channel", "_deadline", "_reply_to")
    _channel: Channel | None
    _deadline: int
    _reply_to: int


# repr() and error messages show them as what they are to an app: a Message.
Received.__name__ = Received.__qualname__ = "Message"
Asked.__name__ = Asked.__qualname__ = "Message"
