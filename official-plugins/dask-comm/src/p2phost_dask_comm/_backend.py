"""The Dask comm backend for ``p2phost://`` addresses (entry point group
``distributed.comm.backends``, name ``p2phost``)."""

from __future__ import annotations

from typing import Any

from distributed.comm.registry import Backend

from ._address import Address
from ._comm import P2PHostConnector, P2PHostListener


class P2PHostBackend(Backend):
    """Scheduler, workers and clients over p2phost: ``p2phost://PEERID`` addresses,
    resolved by the node's discovery, carried by its transports and security."""

    def get_connector(self) -> P2PHostConnector:
        """What Dask connects with."""
        return P2PHostConnector()

    def get_listener(self, loc: str, handle_comm: Any, deserialize: bool,
                     **connection_args: Any) -> P2PHostListener:
        """A listener for ``loc`` (``PEERID[/NAME]``, or anything else for the default)."""
        return P2PHostListener(loc, handle_comm, deserialize, **connection_args)

    def get_address_host(self, loc: str) -> str:
        """The peer id: each p2phost peer is a host of its own to Dask."""
        return Address.parse(loc).peer

    def resolve_address(self, loc: str) -> str:
        """Addresses are canonical already."""
        return str(Address.parse(loc)).removeprefix("p2phost://")

    def get_local_address_for(self, loc: str) -> str:
        """Any listener of this process's node (``p2phost://``)."""
        return ""
