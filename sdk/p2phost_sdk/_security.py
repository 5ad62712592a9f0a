"""The security kind: authenticate a peer and protect a connection's frames."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import ClassVar

from ._errors import HandshakeError, TransportError
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
    #: The largest frame the handshake sends or accepts on the raw connection: the host
    #: refuses larger incoming frames until the handshake is done.
    max_handshake_frame: ClassVar[int] = 65536

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


async def run_handshake(
    connection: Connection, handshake: Awaitable[SecureConnection], *, protocol: str,
    timeout: float,
) -> SecureConnection:
    """Await ``handshake`` on ``connection`` with the failure rules every plugin shares.

    It must finish within ``timeout`` seconds; a timeout or a transport failure becomes a
    :class:`HandshakeError` naming ``protocol`` and the remote address, and on any failure
    (cancellation included) ``connection`` is closed: a half-done handshake is useless.
    """
    where = connection.remote_address or "the peer"
    done = False
    try:
        async with asyncio.timeout(timeout):
            secured = await handshake
        done = True
        return secured
    except TimeoutError:
        raise HandshakeError(
            f"{protocol} handshake with {where} did not finish within {timeout:g}s"
        ) from None
    except TransportError as exc:
        raise HandshakeError(f"{protocol} handshake with {where} failed: {exc}") from exc
    finally:
        if not done:
            await connection.close()
