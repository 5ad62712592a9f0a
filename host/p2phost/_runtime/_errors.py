"""Errors of the node runtime::

    P2PHostError                       (p2phost_sdk) every error p2phost raises on purpose
    ├── WireError                      a frame breaks the wire format; its connection closes
    └── HandshakeError                 (p2phost_sdk) a peer did not complete the handshake
        ├── Refused                    this node refused a peer it has no room for (its
        │                              peer limit), in a GOODBYE in place of its hello
        ├── ConnectionRefusedByPeer    the peer said GOODBYE in place of its hello: ``reason``
        │                              (its words), ``code`` (a limit, or None) and ``fix``
        └── PeerNotTrusted             this node's trust policy refused the peer's id or name
    UserError                          (p2phost._errors) says what is wrong and the fix
    ├── NodeConfigError                the node cannot start as configured
    ├── ListenError                    the node cannot listen on an address
    ├── NodeAlreadyRunning             another node of the project answers on its socket
    └── NodeNotRunning                 no node of the project answers on its socket

A failed dial reaches callers as the SDK's ``PeerUnavailable`` raised *from* the
``HandshakeError`` (``connect``, ``send``, the redial loops): :func:`refusal_of` finds
the refusal in that chain, so nothing tells a refusal apart by its words.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from p2phost_sdk import AddressError, HandshakeError, P2PHostError

from .._errors import UserError

#: Why a listener refused, when it is one of the reasons it has a fix for: its
#: ``[node] peer-limit``, too many handshakes in progress (in all, or from this
#: dialler's address), or its trust policy.
RefusalCode = Literal["peer-limit", "busy", "busy-from-source", "untrusted"]


class WireError(P2PHostError):
    """A frame breaks the wire format (docs/wire.md); its connection is closed."""


class Refused(HandshakeError):
    """The listener refused a peer it has no room for (its peer limit): a refusal, said in
    a GOODBYE in place of its hello, not a failed handshake."""


class ConnectionRefusedByPeer(HandshakeError):
    """The peer refused this node's connection: it said why in a GOODBYE where its hello
    (or its security handshake) was due.

    ``reason`` is the peer's words (one line, bounded), ``code`` what the dialler made of
    them (None: a reason with no fix of this node's), ``fix`` what fits the code.
    """

    def __init__(self, reason: str, code: RefusalCode | None = None,
                 fix: str | None = None) -> None:
        self.reason, self.code, self.fix = reason, code, fix
        super().__init__(f"the peer refused the connection: {reason}"
                         + (f"; fix: {fix}" if fix else ""))

    @property
    def at_limit(self) -> bool:
        """Whether the peer refused at one of its limits (it may have room soon, so a
        dial is worth retrying), not for who this node is."""
        return self.code in ("peer-limit", "busy", "busy-from-source")


class PeerNotTrusted(HandshakeError):
    """This node's trust policy refused the peer it reached (its proven id, or the name
    its hello gives): the peer was reached, and refused, not unreachable."""

    def __init__(self, peer_id: str, why: str) -> None:
        self.peer_id, self.why = peer_id, why
        super().__init__(f"peer {peer_id} is refused by the trust policy: {why}")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it was raised from, in turn."""
    while exc is not None:
        yield exc
        exc = exc.__cause__


def refusal_of(exc: BaseException | None) -> ConnectionRefusedByPeer | None:
    """The peer's refusal that ``exc`` is, or was raised from (None: not a refusal)."""
    return next((e for e in _chain(exc) if isinstance(e, ConnectionRefusedByPeer)), None)


def not_trusted_of(exc: BaseException | None) -> PeerNotTrusted | None:
    """This node's trust policy's refusal that ``exc`` is, or was raised from (None: not
    one; the peer's trust policy refusing this node is a :func:`refusal_of`)."""
    return next((e for e in _chain(exc) if isinstance(e, PeerNotTrusted)), None)


def refused(exc: BaseException | None) -> bool:
    """Whether a failed dial reached its peer and one side refused the handshake: the
    peer (its limits, its trust policy) or this node's trust policy."""
    return any(isinstance(e, (ConnectionRefusedByPeer, PeerNotTrusted)) for e in _chain(exc))


def untrusted(exc: BaseException | None) -> bool:
    """Whether a trust policy refused the handshake: this node's, or the peer's."""
    return any(isinstance(e, PeerNotTrusted) or (isinstance(e, ConnectionRefusedByPeer)
                                                 and e.code == "untrusted")
               for e in _chain(exc))


class NodeConfigError(UserError):
    """The node cannot start as configured (no codec, a topic claimed twice, bad address)."""


class ListenError(UserError):
    """The node cannot listen on an address from ``[node] listen``."""


class NodeAlreadyRunning(UserError):
    """Another node of the same project answers on the project's control socket."""


class NodeNotRunning(UserError):
    """No node of this project is running (nothing answers on its control socket)."""


def bad_address(exc: AddressError, where: str | None = None) -> NodeConfigError:
    """A malformed address as the usage error it is (exit 2), with the form to write;
    ``where`` names the ``p2phost.toml`` key it came from, if it did."""
    place = f"in {where} of p2phost.toml, " if where else ""
    return NodeConfigError(f"{where}: {exc}" if where else str(exc),
                           fix=f"{place}write the address as {exc.expected}")
