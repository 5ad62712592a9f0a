"""Stored sends counted beside an MQTT inbox, and the node's own count of what it took
(``_counts``, ``_tally``): the part of :class:`~._medium.MqttMedium` that refuses a send
the broker would drop, and counts what expired unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace

from p2phost_sdk.inbox import InboxFull, Medium, MediumRefused, MediumUnavailable

from ._counts import Watch, stored_topic, taken_topic
from ._tally import Count, Inbox, Tally, bucket_of

_TAKEN_EVERY = 0.2  # seconds between updates of the retained taken count
_CLAIM = 32  # places a sender claims at a time in an absent node's queue
_MARK_EVERY = 10.0  # seconds between the node's marks of how far it has read


def _full(cap: int, max_bytes: int, waiting: Count, letters: int, size: int) -> str:
    """Which limit ``letters`` more (``size`` bytes of records) would pass; "": none."""
    if cap and waiting.n + letters > cap:
        return f"max-messages = {cap} waiting records, {waiting.n} now"
    if max_bytes and waiting.b + size > max_bytes:
        return f"max-bytes = {max_bytes} bytes, {waiting.b} now"
    return ""


def inbox_topic(name: str) -> str:
    """The topic of inbox ``name`` (a node reads it and its subtopics: letters with an
    expiry come on ``.../x/BUCKET``, the node's own marks on ``.../mark/BUCKET``)."""
    return f"p2phost/inbox/{name}"


class CountedMedium(Medium):
    """An MQTT medium's counting: what its sends stored and its node took."""

    _watch: Watch

    def __init__(self, peer_id: str, broker_limit: int) -> None:
        self._inbox = ""
        self._persistent = True
        self._peer_id = peer_id
        #: What the broker queues at most per absent session (0: no limit).
        self.broker_limit = broker_limit
        self._taken = Tally()
        self._taken_sent = b""
        self._taken_at = 0.0
        self._taken_later: asyncio.Task[None] | None = None
        self._marks: asyncio.Task[None] | None = None
        # inbox -> letters this sender stored there / places it claimed (the count shown)
        self._stored: dict[str, Tally] = {}
        self._claims: dict[str, int] = {}

    @abstractmethod
    async def _look(self, name: str) -> Inbox:
        """Inbox ``name``'s limits and counts, as last seen."""

    @abstractmethod
    async def _mark(self, name: str, value: bytes, *, topic: bool = False,
                    retain: bool = True) -> None:
        """Publish ``value`` (retained unless said otherwise) to ``name``'s marker, or
        to the topic ``name``."""

    @abstractmethod
    async def _publish(self, name: str, records: Sequence[bytes], bucket: int | None = None,
                       max_age: float = 0.0) -> None:
        """Publish ``records`` to inbox ``name`` (with an expiry: in ``bucket``)."""

    async def store(self, name: str, records: Sequence[bytes]) -> None:
        """Refused when the letters waiting in the inbox (as the retained counts say) and
        these would pass its limit, which the broker would silently enforce. A sender
        claims places :data:`_CLAIM` at a time: its retained count goes up before the
        records it covers are published (in the same round trip), and down to what it
        really stored when it closes or is refused (a sender killed meanwhile makes the
        inbox look fuller than it is by the rest of its claim)."""
        if "-" in name:  # a reply inbox: answers while its reader waits
            await self.append(name, records)
            return
        inbox, now = await self._look(name), time.time()
        cap = min((x for x in (inbox.max_messages, self.broker_limit) if x), default=0)
        mine = stored_topic(name, self._peer_id)
        shown = self._watch.count(mine)
        if name not in self._stored:
            # An earlier run's claim counts as stored (it may have used it unwritten).
            self._stored[name] = replace(shown, unused=0)
        actual = self._stored[name]
        # This sender's own places claimed and not used yet are its own to use.
        unused = max(0, shown.total.n - actual.total.n)
        waiting = (inbox.waiting(now) - Count(unused)).floor()
        size = sum(map(len, records))
        full = _full(cap, inbox.max_bytes, waiting, len(records), size)
        if full and unused and await self._watch.came_back(mine):
            # Senders that claimed at the same instant each see the others' claims: a
            # claim the broker took after this sender's gives way to it (each sender
            # sees the same order), or each would refuse the others with places unused.
            waiting = (waiting - Count(self._watch.claimed_after(name, mine))).floor()
            full = _full(cap, inbox.max_bytes, waiting, len(records), size)
        if full:
            # Its own claim, unused, would make the inbox look full to the others.
            with contextlib.suppress(MediumUnavailable, MediumRefused):
                await self._settle_claim(name)
            raise InboxFull(
                f"the inbox of {name} on {self.url} is full ({full}): nothing was stored "
                "(the MQTT broker would drop what passes it); it empties as that node runs")
        bucket = bucket_of(now, inbox.max_age) if inbox.max_age else None
        actual.add(Count(len(records), size), bucket)
        claim = self._claims.get(name, 0)
        if actual.total.n <= claim:
            await self._publish(name, records, bucket, inbox.max_age)
            return
        # Places are claimed ahead only where the count alone is limited: bytes and
        # expiry buckets are known once stored, so then each store writes its count.
        batch = 1 if inbox.max_bytes or inbox.max_age else _CLAIM
        room = cap - waiting.n - len(records) if cap else batch
        claim = self._claims[name] = actual.total.n + max(0, min(batch - 1, room))
        actual.fold(now, inbox.taken.passed)
        published = actual.copy()
        published.total = Count(claim, actual.total.b)
        published.unused = claim - actual.total.n
        payload = published.payload()
        self._watch.note(mine, payload)
        # Both in flight at once, the count's packet first (each publish hands its packet
        # to the client before its first wait): one round trip.
        await asyncio.gather(self._mark(mine, payload, topic=True),
                             self._publish(name, records, bucket, inbox.max_age))

    async def _settle_claims(self) -> None:
        # What this sender really stored, in place of its claims.
        for name in list(self._claims):
            await self._settle_claim(name)

    async def _settle_claim(self, name: str) -> None:
        claim = self._claims.pop(name, 0)
        if claim > self._stored[name].total.n:
            payload = self._stored[name].payload()
            self._watch.note(stored_topic(name, self._peer_id), payload)
            await self._mark(stored_topic(name, self._peer_id), payload, topic=True)

    async def _mark_reading(self) -> None:
        # A mark goes through the session's queue like a letter: once it comes back,
        # everything stored before it was delivered or dropped (``_tally``, "passed").
        while True:
            bucket = bucket_of(time.time(), self.retention.max_age)
            with contextlib.suppress(MediumUnavailable, MediumRefused):
                await self._mark(f"{inbox_topic(self._inbox)}/mark/{bucket}", b"", topic=True,
                                 retain=False)
            await asyncio.sleep(_MARK_EVERY)

    def _taken_changed(self) -> None:
        # Written at most every 0.2 s, and 0.2 s after the last change (the last
        # letters of a burst, a mark of how far the node has read). A reply inbox has
        # no count: nothing is stored there for an absent reader.
        if not self._persistent:
            return
        if self._taken_later is None or self._taken_later.done():
            wait = max(0.0, self._taken_at + _TAKEN_EVERY - time.monotonic())
            self._taken_later = asyncio.get_running_loop().create_task(
                self._send_taken_later(wait), name="mqtt taken count")

    async def _send_taken_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        while True:
            with contextlib.suppress(MediumUnavailable, MediumRefused):
                await self._send_taken()
            # Letters taken while that was on its way (or a broker that was away) are
            # written next: none is left uncounted once the node is idle.
            if self._taken.payload() == self._taken_sent:
                return
            await asyncio.sleep(_TAKEN_EVERY)

    async def _send_taken(self) -> None:
        # Senders count what waits from it: behind by at most the last few letters (they
        # then refuse a little early, never late).
        self._taken.fold(time.time(), self._taken.passed)
        payload = self._taken.payload()
        if payload != self._taken_sent:
            self._taken_at, self._taken_sent = time.monotonic(), payload
            await self._mark(taken_topic(self._inbox), payload, topic=True)
