"""Saying at once when the robust connection to the broker is lost, and when it is back.

aio-pika's robust connection reconnects by itself, so the inbox's consumer never sees
the loss: without this the node said nothing of its own (the libraries log a traceback
and a line a second). Heartbeats every few seconds make a broker that vanished without
closing the socket (a killed host, a cut network) count as lost within about 20 s,
not the 3 minutes of the default 60 s heartbeat.

The connection's close callback and the inbox's reader both see an outage, in either
order: :class:`Outage` says it once, for whichever sees it first, and its end once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from p2phost_sdk.inbox import Medium

log = logging.getLogger("p2phost.transport.amqp")
#: Seconds of the heartbeat asked for: aiormq gives the link up after about 3 missed.
HEARTBEAT = 5


class Outage:
    """The current loss of the broker of ``medium``, if any: logged once when it starts
    and once when it ends."""

    def __init__(self, medium: Medium) -> None:
        self._medium = medium
        self._since: float | None = None

    def watch(self, connection: AbstractRobustConnection) -> None:
        """Hear of the loss of ``connection`` (not a close of ours) and of its return,
        counting its reconnections (``Medium.reconnects``: credits are sent again)."""

        def lost(_: Any, exc: BaseException | None = None) -> None:
            if not (connection.close_called or connection.is_closed):
                self.lost(exc)

        def back(_: Any) -> None:
            self._medium.reconnects += 1
            self.back()

        connection.close_callbacks.add(lost)
        connection.reconnect_callbacks.add(back)

    def lost(self, exc: BaseException | None) -> None:
        """The connection or the inbox's consumer is lost (``exc``, when known)."""
        if self._since is not None:
            return
        self._since = time.monotonic()
        log.warning("lost the AMQP broker at %s (reconnecting every second; nothing is sent "
                    "or received meanwhile): %s\nfix: check that the broker runs there and "
                    "the network to it", self._medium.url,
                    (str(exc) or type(exc).__name__) if exc else "connection closed")

    def back(self) -> None:
        """The connection, or the inbox's consumer, works again."""
        if self._since is not None:
            log.info("reconnected to the AMQP broker at %s after %.1f s", self._medium.url,
                     time.monotonic() - self._since)
            self._since = None
