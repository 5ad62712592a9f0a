"""The discovery kind: how a node finds peers, and notices when they leave."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._signed import SignedPresence


@dataclass(frozen=True)
class PeerRecord:
    """A peer as discovery sees it: its id when known, and addresses to dial it at."""

    addresses: tuple[str, ...]
    peer_id: str | None = None
    #: The name of the discovery plugin that found it.
    source: str = ""


class DiscoveryEvents(Protocol):
    """What the host gives a discovery plugin: who we are, and where to report peers."""

    @property
    def peer_id(self) -> str:
        """This node's peer id (to announce, and to ignore ourselves)."""
        ...

    @property
    def addresses(self) -> list[str]:
        """The addresses this node really listens on (to announce)."""
        ...

    def sign_presence(self, scope: str, addresses: Sequence[str], *, lifetime: float,
                      goodbye: bool = False) -> SignedPresence:
        """This node's presence record for ``scope``, signed with its key, valid for
        ``lifetime`` seconds (docs/discovery.md). Sequence numbers only ever grow."""
        ...

    def peer_found(self, record: PeerRecord) -> None:
        """Report a peer (again). Cheap to call repeatedly."""
        ...

    def peer_lost(self, record: PeerRecord) -> None:
        """Report that a peer left or went silent."""
        ...


class Discovery(ABC):
    """Finds peers and reports them through :class:`DiscoveryEvents`."""

    @abstractmethod
    async def start(self, events: DiscoveryEvents) -> None:
        """Start announcing and looking; must return promptly (own background tasks)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop, cancel and await every task started, send goodbyes if the medium has them."""

    def counters(self) -> dict[str, int]:
        """Counters for ``p2phost peers`` (records accepted, rejected by reason...)."""
        return {}

    def health(self) -> str:
        """Why this plugin finds no peers right now (broker down...) and the fix, or ""."""
        return ""
