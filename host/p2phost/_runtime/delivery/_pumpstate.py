"""What the outbox keeps per peer: its pump's state, and the rows it sends."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ..wire._channel import Channel


class Row(NamedTuple):
    """An outbox row as the pump sends it."""

    seq: int
    id: int
    topic: str
    content_type: str
    body: bytes


@dataclass
class Pump:
    """One peer's pump: where it is in the outbox, and what is in flight."""

    peer: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    channel: Channel | None = None
    #: The outbox position sent up to on ``channel``.
    cursor: int = 0
    #: Message id -> when it was sent, in the order sent.
    inflight: dict[int, float] = field(default_factory=dict)
    #: Acknowledged, deletion not yet committed: not to be sent again.
    acked: set[int] = field(default_factory=set)
    #: Sent at least once by this run (a further send counts as a resend).
    sent: set[int] = field(default_factory=set)
    #: Whether the last read found every row up to the end (then new rows come in
    #: ``fresh``, straight from ``put``, with no read of the database).
    caught_up: bool = False
    fresh: deque[Row] = field(default_factory=deque)
    #: When it last sent fresh rows (monotonic seconds).
    sent_at: float = 0.0
    #: Sent again by a timeout, not acknowledged since.
    resent: set[int] = field(default_factory=set)
    #: ``ack-timeout`` times this is the wait for acknowledgements now.
    backoff: int = 1
