"""The security kind: authenticate a peer and protect a connection's frames."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from ._identity import Identity
from ._transport import Connection


class SecureConnection(Connection, ABC):
    """A connection whose remote peer id has been proven by a handshake."""

    #: The proven peer id of the other end.
    remote_peer_id: str | None = None


class Security(ABC):
    """Wraps a raw connection: runs a handshake, then protects every frame."""

    #: The protocol name agreed between peers, e.g. ``"noise"``.
    protocol: ClassVar[str] = ""
    #: The largest frame a secured connection carries each way (plugins set it from
    #: ``PluginContext.max_frame_size``); larger ones raise ``FrameTooLarge``.
    max_frame_size: int = 16 * 1024 * 1024

    @abstractmethod
    async def secure(
        self,
        connection: Connection,
        *,
        identity: Identity,
        initiator: bool,
        expected_peer_id: str | None,
        timeout: float,
    ) -> SecureConnection:
        """Run the handshake on ``connection`` within ``timeout`` seconds.

        Raises ``HandshakeError`` when the peer cannot prove an identity, or proves one
        other than ``expected_peer_id`` (when given).
        """
