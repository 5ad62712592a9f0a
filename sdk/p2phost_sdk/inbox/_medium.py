"""What a broker or database must do to carry inbox connections: the :class:`Medium`.

A transport plugin for a shared medium implements only this: connect, hold one inbox
(this node's), append records to any inbox in order, and acknowledge records taken from
its own inbox. :class:`~p2phost_sdk.inbox.InboxTransport` builds connections with the
stream semantics of TCP on top (order, flow control, close, redelivery, resume).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import (
    MediumError,
)

#: Called by the medium with each record of its inbox, in order, and the token that
#: acknowledges it (None on media that do not redeliver). Awaiting it is backpressure.
Deliver = Callable[[bytes, Any], Awaitable[None]]
#: Called by a medium with a record it refused unread (over ``max_read_size``): its first
#: bytes (at least the header, sender and inbox: 256 are enough), its size, its token.
TooLarge = Callable[[bytes, int, Any], None]


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task has been asked to stop.

    Some clients swallow the cancellation of a call in flight and return (or raise their
    own error) instead; a loop that calls them checks this after each call, so that it
    still stops when its owner cancels it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class Retention:
    """How much this node's inbox keeps for it (``max-age``, ``max-messages``,
    ``max-bytes`` in the transport's config; 0: no limit). An append beyond a count or
    size limit is refused (:class:`InboxFull`), never dropped; records older than the
    age limit are removed unread and counted as expired."""

    max_age: float = 0.0
    max_messages: int = 0
    max_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.max_age or self.max_messages or self.max_bytes)


class Medium(ABC):
    """One node's link to one broker or database, and its own inbox there."""

    #: The medium's URL as shown to people and peers (never with a password).
    url: str = ""
    #: The largest record the medium accepts, in bytes (its configured message limit).
    max_record_size: int = 16 * 1024 * 1024
    #: Whether records wait on the medium for an absent reader and are redelivered until
    #: acknowledged (a node killed while reading loses nothing).
    durable: bool = True

    #: The largest record this node takes from its inbox (its max frame size and a
    #: record's header), set before :meth:`open_inbox`; 0: no limit. A medium that can
    #: see a record's size before it reads the record (a database row) refuses larger
    #: ones unread: anyone who may write to the inbox could make one as large as the
    #: medium allows.
    max_read_size: int = 0
    #: Where such a record goes instead of ``deliver`` (set with ``max_read_size``): the
    #: connection it belongs to fails that frame in order as too large, as if read.
    too_large: TooLarge | None = None
    #: This node's inbox limits, set before :meth:`open_inbox` (media that enforce them
    #: record them with the inbox, where senders' appends see them).
    retention: Retention = Retention()
    #: Why this medium cannot store records for a peer that is not reading (core NATS:
    #: nothing is held), with the fix; "" when it can (:meth:`create_inbox` works).
    cannot_store: str = ""
    #: Records of this node's inbox that expired unread while it was away and that the
    #: medium stops counting once :meth:`open_inbox` has run (it sets this): the node
    #: adds them to its own counts (``p2phost inbox stats``, "expired unread").
    expired_at_open: int = 0
    #: How many times the medium has connected its inbox reader again after losing it.
    #: A medium whose :meth:`append_credits` may lose records in a crash counts them:
    #: the transport then sends every connection's flow-control credit again.
    reconnects: int = 0
    #: Whether a sender appends at most half its window at a time. The reader credits
    #: every half window it takes, so the sender stores the second half while the
    #: reader takes the first, instead of waiting for the whole window's round trip:
    #: for media whose appends take long beside the reader's work (a database's insert
    #: flushed to disk), where one append more per window costs less than the wait.
    split_window: bool = False

    @abstractmethod
    async def connect(self) -> None:
        """One attempt to connect; raises :class:`MediumUnavailable` or
        :class:`MediumRefused`. Called again (with backoff) after an Unavailable."""

    @abstractmethod
    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        """Create the inbox ``name`` if needed and start delivering its records.

        Records left unacknowledged by an earlier reader of the inbox (a crashed run of
        this node) come first. The medium keeps delivering across lost connections,
        reconnecting with backoff on its own; records not yet acknowledged when the
        connection was lost may come again (the transport drops duplicates).
        """

    @abstractmethod
    async def append(self, name: str, records: Sequence[bytes]) -> None:
        """Append ``records`` to the inbox ``name`` in order; return once the medium has
        them (as durably as it can). Raises :class:`UnknownInbox` when there is no such
        inbox, :class:`MediumUnavailable` when the medium is unreachable (the transport
        retries: appending a record twice is harmless)."""

    async def append_credits(self, name: str, records: Sequence[bytes]) -> None:
        """Append flow-control credits (control records that say how far a receiver
        got): as :meth:`append`, but a medium may return before they are on disk. One
        lost in a crash of the medium is sent again once :attr:`reconnects` grows."""
        await self.append(name, records)

    async def store(self, name: str, records: Sequence[bytes]) -> None:
        """Append records stored for a peer: as :meth:`append`, and refused with
        :class:`InboxFull` when the inbox is at its retention limit (media that enforce
        one)."""
        await self.append(name, records)

    async def create_inbox(self, name: str) -> None:
        """Create the inbox ``name`` if it does not exist (without reading it), so that
        records appended to it wait for a node that has never run. Idempotent."""
        raise MediumError(self.cannot_store or f"{self.url} cannot create inboxes for others")

    async def inbox_stats(self, name: str) -> dict[str, Any]:
        """What the inbox ``name`` holds now: ``records`` waiting, ``bytes`` (None when
        the medium cannot tell), ``exists``."""
        return {"exists": await self.probe(name), "records": None, "bytes": None}

    async def peek(self, name: str, limit: int) -> list[tuple[bytes, float | None]]:
        """Up to ``limit`` records of the inbox ``name`` from its oldest, left in place,
        each with the Unix time the medium took it (None: unknown); [] when the medium
        cannot look without taking."""
        return []

    async def purge_inbox(self, name: str) -> int | None:
        """Remove every record waiting in the inbox ``name`` (it stays); how many (None:
        unknown)."""
        raise MediumError(f"{self.url} cannot purge an inbox")

    async def delete_inbox(self, name: str) -> bool:
        """Remove the inbox ``name`` and what it holds; whether it existed."""
        raise MediumError(f"{self.url} cannot delete an inbox")

    async def probe(self, name: str) -> bool | None:
        """Whether the inbox ``name`` exists, for media whose appends cannot tell (a
        dialler then learns of an unknown peer at once); None: this medium cannot say."""
        return None

    def record_of(self, token: Any) -> Hashable | None:
        """The stored record ``token`` would settle if acknowledged: tokens with the same
        answer are deliveries of one record, and acknowledging any of them settles it
        (a JetStream message's stream sequence, a row's id, a stream entry's id). None:
        this medium cannot tell. A node working on a frame holds a few copies' tokens;
        a copy past those is acknowledged at once only if it is a record of its own
        (a sender's append repeated), else let go unacknowledged: acknowledging a
        redelivery would settle the frame before the node is done with it."""
        return None

    async def ack(self, name: str, tokens: Sequence[Any]) -> None:
        """Acknowledge records of this node's inbox by their tokens: they are done.

        Tokens of a lost connection may be stale: ignore them (the records come again)."""

    @abstractmethod
    async def close(self, *, delete_inbox: bool) -> None:
        """Stop delivering and disconnect; with ``delete_inbox``, remove the inbox and
        what it holds (a short-lived node's reply inbox). Idempotent."""
