"""``ws://HOST:PORT/PATH`` addresses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from p2phost_sdk import AddressError, format_host_port, parse_host_port

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
        except ValueError:  # an unclosed [IPv6 bracket: the SDK's parser says so
            parts = None
        # The host and port as tcp and quic read theirs (an IPv6 host without its
        # brackets is named as such); the path, which they refuse, is ours.
        head = address if parts is None else f"{parts.scheme}://{parts.netloc}"
        try:
            host, port = parse_host_port(head, scheme="ws")
        except AddressError as exc:
            # The SDK names the form without a path: name ours, which may have one.
            problem = exc.problem.replace(exc.expected, EXPECTED)
            raise AddressError(address, problem, expected=EXPECTED) from None
        assert parts is not None  # (urlsplit refused it: so did parse_host_port)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise AddressError(address, f"{_EXPECTED} (no query, fragment or user)",
                               expected=EXPECTED)
        return cls(host, port, parts.path or "/")

    def with_port(self, host: str, port: int) -> WsAddress:
        """The same path on ``host:port`` (a listener's real address)."""
        return WsAddress(host, port, self.path)

    @property
    def url(self) -> str:
        """The address as a URL (IPv6 hosts in brackets, ``/`` left out)."""
        path = "" if self.path == "/" else self.path
        return format_host_port(self.host, self.port, scheme="ws") + path
