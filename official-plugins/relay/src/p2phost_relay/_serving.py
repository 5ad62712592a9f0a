"""The relay's own side of the relay protocol ([config.relay] ``serve = true``):
reservations, opening circuits between a dialler and a target, pulls, and the sweep.
A part of :class:`~._service.RelayService`, which holds the state named here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from p2phost_sdk import TaskOwner

from ._errors import RelayError, RelayRefused
from ._forward import Forwards
from ._hop import End, Hop, HopCircuit
from ._reservation import reason_of
from ._settings import RelaySettings
from ._upgrade import offered

if TYPE_CHECKING:
    from p2phost_sdk import Messenger

#: The app topic the relay protocol travels on (docs/wire.md section 7).
TOPIC = "relay"
log = logging.getLogger("p2phost.plugin.relay")
_MAX_ID = 32
#: What a ``credit`` counts against the relay's buffer of its direction (so a flood of them
#: is bounded like one of frames).
_CREDIT_SIZE = 64


class Serving:
    """What a node does as a relay for others."""

    settings: RelaySettings
    hop: Hop
    forwards: Forwards
    counters: Counter[str]
    tasks: TaskOwner

    if TYPE_CHECKING:  # RelayService has them
        @property
        def node(self) -> Messenger: ...
        def _tell_later(self, end: End | None, reason: str) -> None: ...
        async def _tell(self, end: End | None, reason: str) -> None: ...
        def _malformed(self, op: str) -> RelayError: ...

    def on_reserve(self, sender: str) -> dict[str, Any]:
        """A peer reserves a slot (or renews it): it becomes reachable through us."""
        self._serving("reserve")
        return {"ttl": self.hop.reserve(sender)}

    async def on_connect(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        """A dialler asks for a circuit to a peer holding a reservation here."""
        self._serving("connect")
        circuit_id, target = body.get("circuit"), body.get("target")
        if not _is_id(circuit_id) or not isinstance(target, str) or len(target) > 128:
            raise self._malformed("connect")
        assert isinstance(circuit_id, str)
        circuit = self.hop.open(End(sender, circuit_id), target)
        if body.get("pull") is True:
            self.forwards.pullers[circuit.dialler] = asyncio.get_running_loop().time()
        # Flow control when the dialler speaks it: both ends learn this relay's buffer (a
        # window larger would overflow it) and the target that the dialler grants credit.
        credit = {"credit": True, "buffer": self.settings.buffer_bytes} \
            if body.get("credit") is True and body.get("pull") is not True else {}
        # The target is asked by a task of its own: this handler does not wait for it, so
        # a target slow to answer holds up neither the dialler's later messages nor, through
        # them, the app's shared mailbox. A refusal closes the circuit, with the reason.
        self.tasks.spawn(self._ask_target(circuit, offered(body.get("addrs")), credit),
                         f"relay incoming {circuit_id}")
        return {"ok": True, **({"buffer": self.settings.buffer_bytes} if credit else {})}

    async def _ask_target(self, circuit: HopCircuit, addrs: list[str],
                          credit: dict[str, Any]) -> None:
        try:
            await self.node.request(circuit.target.peer, TOPIC,
                                    {"op": "incoming", "from": circuit.dialler.peer,
                                     "circuit": circuit.target.circuit, "addrs": addrs,
                                     **credit},
                                    timeout=self.settings.request_timeout)
        except Exception as exc:
            if self.hop.close(circuit.dialler, "refused by the target") is not None:
                self.hop.counters["refused: by the target"] += 1
                await self._tell(circuit.dialler, f"refused by the target: {reason_of(exc)}")

    def on_pull(self, sender: str, body: dict[str, Any]) -> dict[str, Any]:
        """A dialler that is sent only replies (a client node) takes its circuit's frames."""
        circuit_id = body.get("circuit")
        if not _is_id(circuit_id):
            raise self._malformed("pull")
        assert isinstance(circuit_id, str)
        end = End(sender, circuit_id)
        other = self.hop.other(end)
        if other is None or end not in self.forwards.pullers:
            return {"data": [], "closed": self.forwards.ended.pop(end, "the circuit is closed")}
        return {"data": self.forwards.take(other, end)}

    def sweep(self) -> None:
        """Close circuits past their time (both ends told); forget lapsed reservations."""
        self.hop.active_reservations()
        for ends in self.hop.overdue():
            for end in ends:
                self._tell_later(end, "time limit")
        for end in self.forwards.gone(2 * self.settings.request_timeout):
            log.info("closed a circuit of %s: it stopped pulling its frames (a client that "
                     "ended)", end.peer)
            self._tell_later(self.hop.close(end, "puller gone"), "the other end stopped "
                             "asking for its frames (its client ended)")

    def _serving(self, op: str) -> None:
        if not self.settings.serve:
            self.hop.counters["refused: not a relay"] += 1
            raise RelayRefused(f"not a relay: this node does not relay ({op}); fix on the "
                               "relay: serve = true under [config.relay]")


async def _run(work: Awaitable[None]) -> None:
    await work


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID


def _is_size(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**63
