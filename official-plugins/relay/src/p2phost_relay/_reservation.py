"""A reservation on a relay, kept by a task while its listen address is open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from p2phost_sdk import AcceptHandler, Backoff

from ._address import RelayAddress
from ._errors import RelayError

if TYPE_CHECKING:
    from ._service import RelayService

log = logging.getLogger("p2phost.plugin.relay")
#: Retries of a refused or failed reservation.
BACKOFF = Backoff(initial=0.5, maximum=30.0)
_TOPIC = "relay"


class Reservation:
    """A listen address on a relay: the slot this node keeps there, renewed while open."""

    def __init__(self, address: RelayAddress, accept: AcceptHandler) -> None:
        self.address = address
        self.accept = accept
        #: The relay's peer id while the reservation holds, else None.
        self.relay_peer: str | None = None
        self.lost = asyncio.Event()
        #: Set once the relay first granted the reservation: the listen address takes
        #: connections from then on (the host says "listening on" then).
        self.granted = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


async def keep(self: RelayService, reservation: Reservation) -> None:
    """Hold ``reservation`` on its relay: reserve, renew at half-life or at once when the
    connection to the relay ends, retry with backoff when refused. Runs until cancelled."""
    attempt, relay_at = 0, reservation.address.relay
    while True:
        try:
            node = self.node
            async with asyncio.timeout(self.settings.request_timeout):
                relay = await node.connect(relay_at)
            answer = await node.request(relay, _TOPIC, {"op": "reserve"},
                                        timeout=self.settings.request_timeout)
            ttl = float(answer["ttl"]) if isinstance(answer, dict) else 0.0
            if not ttl > 0:
                raise RelayError(f"the relay answered the reservation with {answer!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reservation.relay_peer = None
            self.counters["reservation failed"] += 1
            delay = BACKOFF.delay(attempt)
            attempt += 1
            log.warning("no reservation on the relay %s (retrying in %.1fs): %s",
                        relay_at, delay, reason_of(exc))
            await asyncio.sleep(delay)
            continue
        if reservation.relay_peer is None:
            log.info("reachable through the relay %s as %s", relay_at,
                     reservation.address.of(self.peer_id))
        reservation.relay_peer, attempt = relay, 0
        reservation.granted.set()
        self.counters["reservations made"] += 1
        reservation.lost.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ttl / 2):
                await reservation.lost.wait()  # renew at half-life, or at once when lost


def reason_of(exc: BaseException) -> str:
    """The first line of an error, bounded: what a log line or an answer says."""
    return str(exc).split("\n")[0][:300]
