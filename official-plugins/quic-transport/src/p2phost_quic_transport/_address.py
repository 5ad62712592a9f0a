"""``quic://HOST:PORT`` addresses."""

from __future__ import annotations

from urllib.parse import urlsplit

from p2phost_sdk import TransportError


def parse_address(address: str) -> tuple[str, int]:
    """``quic://HOST:PORT`` as ``(host, port)``; TransportError says what is wrong."""
    problem = "expected quic://HOST:PORT, e.g. quic://127.0.0.1:7400"
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"bad address {address!r}: the port is not 0-65535") from None
    if parts.scheme != "quic" or not parts.hostname or port is None:
        raise TransportError(f"bad address {address!r}: {problem}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TransportError(f"bad address {address!r}: {problem} (no path, query or fragment)")
    return parts.hostname, port


def format_address(name: object) -> str:
    """The URL of a socket address ``(host, port, ...)`` (IPv6 hosts in brackets)."""
    if not isinstance(name, tuple) or len(name) < 2:
        return ""
    host, port = str(name[0]), int(name[1])
    return f"quic://[{host}]:{port}" if ":" in host else f"quic://{host}:{port}"
