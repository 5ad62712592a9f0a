"""``ws://HOST:PORT/PATH`` addresses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from p2phost_sdk import AddressError

EXPECTED = "ws://HOST:PORT or ws://HOST:PORT/PATH, e.g. ws://127.0.0.1:7480"
_EXPECTED = f"expected {EXPECTED}"


@dataclass(frozen=True)
class WsAddress:
    """Where a WebSocket endpoint is: host, port and the HTTP path it answers on."""

    host: str
    port: int
    path: str = "/"

    @classmethod
    def parse(cls, address: str) -> WsAddress:
        """The parts of ``address``; AddressError says what is wrong."""
        try:
            parts = urlsplit(address)
        except ValueError as exc:  # an unclosed [IPv6 bracket
            raise AddressError(address, f"{exc} ({_EXPECTED})", expected=EXPECTED) from None
        try:
            port = parts.port
        except ValueError:
            raise AddressError(address, "the port is not 0-65535", expected=EXPECTED) from None
        if parts.scheme != "ws" or not parts.hostname or port is None:
            raise AddressError(address, _EXPECTED, expected=EXPECTED)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise AddressError(address, f"{_EXPECTED} (no query, fragment or user)",
                               expected=EXPECTED)
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
