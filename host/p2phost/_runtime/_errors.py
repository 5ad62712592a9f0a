"""Errors of the node runtime."""

from __future__ import annotations

from p2phost_sdk import AddressError, P2PHostError

from .._errors import UserError


class WireError(P2PHostError):
    """A frame breaks the wire format (docs/wire.md); its connection is closed."""


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
