"""Telling JetStream that the messages the node holds are still being worked on.

JetStream delivers again a message not acknowledged within the consumer's ack wait.
Behind a slow handler, stored letters wait in the node's mailbox (up to 1024) far longer
than that, and each would come again every ack wait: a copy read, opened and dropped,
hundreds a second on a node that is already busy. So every quarter of the ack wait the
reader sends ``+WPI`` (in progress: the ack wait starts again) for each message it
delivered at least that long ago and the node still holds.

*Holds* is meant literally: a message is kept in progress while anything references it
(the frame or letter in the node's hands, a copy kept with it), and forgotten once
nothing does. One the node drops unacknowledged (it gave up on it, or takes no letters
in this run) is then delivered again after the ack wait, as without this; one it never
finishes because it was killed comes again at once on the next start (a fresh consumer).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

log = logging.getLogger("p2phost.transport.nats")


class InProgress:
    """The messages of one inbox delivered to the node and not yet acknowledged."""

    def __init__(self, ack_wait: float) -> None:
        self.ack_wait = ack_wait
        #: id(message) -> (the message, weakly; when it was delivered or last told).
        self._messages: dict[int, tuple[weakref.ref[Msg], float]] = {}
        #: ``+WPI`` sent (a count, for tests and debugging).
        self.told = 0

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, message: Msg) -> None:
        """``message`` was fetched for the node."""
        self._messages[id(message)] = (weakref.ref(message), time.monotonic())

    def done(self, message: Msg) -> None:
        """``message`` was acknowledged."""
        self._messages.pop(id(message), None)

    async def keep(self) -> None:
        """Until cancelled: every quarter ack wait, tell the server that the messages
        still held are in progress (each at most that often)."""
        every = self.ack_wait / 4
        while True:
            await asyncio.sleep(every)
            await self.tell(older_than=every)

    async def tell(self, *, older_than: float) -> None:
        """Send ``+WPI`` for each message held and not told for ``older_than`` seconds;
        forget those nothing holds any more."""
        now = time.monotonic()
        for key, (ref, last) in list(self._messages.items()):
            message = ref()
            if message is None:
                del self._messages[key]
            elif now - last >= older_than:
                try:
                    await message.in_progress()
                except (NatsError, OSError):
                    return  # disconnected: redelivered after the ack wait at worst
                except Exception:  # not the end of +WPI for the inbox's life
                    log.warning("telling NATS a message is in progress failed", exc_info=True)
                    return
                self.told += 1
                if key in self._messages:  # not acknowledged meanwhile
                    self._messages[key] = (ref, now)
