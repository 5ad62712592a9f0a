"""``quic://HOST:PORT`` addresses."""

from __future__ import annotations

from urllib.parse import urlsplit

from p2phost_sdk import AddressError

EXPECTED = "quic://HOST:PORT, e.g. quic://127.0.0.1:7400"


def parse_address(address: str) -> tuple[str, int]:
    """``quic://HOST:PORT`` as ``(host, port)``; AddressError says what is wrong."""
    problem = f"expected {EXPECTED}"
    try:
        parts = urlsplit(address)
    except ValueError as exc:  # an unclosed [IPv6 bracket
        raise AddressError(address, f"{exc} ({problem})", expected=EXPECTED) from None
    try:
        port = parts.port
    except ValueError:
        raise AddressError(address, "the port is not 0-65535", expected=EXPECTED) from None
    if parts.scheme != "quic" or not parts.hostname or port is None:
        raise AddressError(address, problem, expected=EXPECTED)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AddressError(address, f"{problem} (no path, query or fragment)",
                           expected=EXPECTED)
    return parts.hostname, port


def format_address(name: object) -> str:
    """The URL of a socket address ``(host, port, ...)`` (IPv6 hosts in brackets)."""
    if not isinstance(name, tuple) or len(name) < 2:
        return ""
    host, port = str(name[0]), int(name[1])
    return f"quic://[{host}]:{port}" if ":" in host else f"quic://{host}:{port}"
