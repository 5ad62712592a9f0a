"""Saying at once when the robust connection to the broker is lost, and when it is back.

aio-pika's robust connection reconnects by itself, so the inbox's consumer never sees
the loss: without this the node said nothing of its own (the libraries log a traceback
and a line a second). Heartbeats every few seconds make a broker that vanished without
closing the socket (a killed host, a cut network) count as lost within about 20 s,
not the 3 minutes of the default 60 s heartbeat.
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


def watch(connection: AbstractRobustConnection, medium: Medium) -> None:
    """Log the loss of ``connection`` (and its return) for ``medium``, and count its
    reconnections (``Medium.reconnects``: credits are sent again)."""
    lost_at: list[float] = []

    def lost(_: Any, exc: BaseException | None = None) -> None:
        # (a close of its own, or already said)
        if getattr(connection, "_close_called", False) or connection.is_closed or lost_at:
            return
        lost_at.append(time.monotonic())
        log.warning("lost the AMQP broker at %s (reconnecting every second; nothing is sent "
                    "or received meanwhile): %s\nfix: check that the broker runs there and "
                    "the network to it", medium.url,
                    str(exc or "") or type(exc).__name__ if exc else "connection closed")

    def back(_: Any) -> None:
        medium.reconnects += 1
        if lost_at:
            log.info("reconnected to the AMQP broker at %s after %.1f s", medium.url,
                     time.monotonic() - lost_at.pop())

    connection.close_callbacks.add(lost)
    connection.reconnect_callbacks.add(back)
