"""``ws://HOST:PORT/PATH`` addresses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from p2phost_sdk import TransportError

_EXPECTED = "expected ws://HOST:PORT or ws://HOST:PORT/PATH, e.g. ws://127.0.0.1:7480"


@dataclass(frozen=True)
class WsAddress:
    """Where a WebSocket endpoint is: host, port and the HTTP path it answers on."""

    host: str
    port: int
    path: str = "/"

    @classmethod
    def parse(cls, address: str) -> WsAddress:
        """The parts of ``address``; TransportError says what is wrong."""
        parts = urlsplit(address)
        try:
            port = parts.port
        except ValueError:
            raise TransportError(f"bad address {address!r}: the port is not 0-65535") from None
        if parts.scheme != "ws" or not parts.hostname or port is None:
            raise TransportError(f"bad address {address!r}: {_EXPECTED}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise TransportError(f"bad address {address!r}: {_EXPECTED} (no query, fragment "
                                 "or user)")
        return cls(parts.hostname, port, parts.path or "/")

    def with_port(self, host: str, port: int) -> WsAddress:
        """The same path on ``host:port`` (a listener's real address)."""
        return WsAddress(host, port, self.path)

    @property
    def url(self) -> str:
        """The address as a URL (IPv6 hosts in brackets, ``/`` left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = "" if self.path == "/" else self.path
        return f"ws://{host}:{self.port}{path}"
