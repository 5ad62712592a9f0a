"""Dask addresses of this backend: ``p2phost://PEERID`` or ``p2phost://PEERID/NAME``.

The peer id is resolved to a transport address by the node's discovery; NAME tells
apart the Dask listeners of one process (a second listener gets ``/1``, ``/2`` ...).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from p2phost_sdk import is_peer_id

from ._errors import BadAddress

SCHEME = "p2phost"
_FIX = "use the address the Dask scheduler or worker printed: p2phost://PEERID"


@dataclass(frozen=True)
class Address:
    """A peer id and one of its node's Dask listener names ("" is the default one)."""

    peer: str
    name: str = ""

    @classmethod
    def parse(cls, loc: str) -> Address:
        """``PEERID`` or ``PEERID/NAME`` (Dask passes addresses without the scheme)."""
        peer, _, name = loc.removeprefix(f"{SCHEME}://").partition("/")
        if not is_peer_id(peer):
            raise BadAddress(f"{SCHEME}://{loc} does not name a p2phost peer id", fix=_FIX)
        if len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise BadAddress(f"{SCHEME}://{loc}: bad listener name {name!r}", fix=_FIX)
        return cls(peer, name)

    @classmethod
    def listening(cls, loc: str) -> Address:
        """Where to listen: ``PEERID[/NAME]``; anything else (Dask's default ``:8786``
        or a host) is this node's default listener, since a peer id is all there is."""
        try:
            return cls.parse(loc)
        except BadAddress:
            return cls("", "")

    def __str__(self) -> str:
        return f"{SCHEME}://{self.peer}" + (f"/{self.name}" if self.name else "")


def is_loopback(url: str) -> bool:
    """Whether the transport address ``url`` is on this host's loopback."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
