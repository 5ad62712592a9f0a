"""``tcp://HOST:PORT`` addresses: parsed for listening and dialling, formatted from a
socket's name."""

from __future__ import annotations

from urllib.parse import urlsplit

from p2phost_sdk import TransportError


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` as ``(host, port)``; TransportError says what is wrong."""
    problem = "expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:7400"
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"bad address {address!r}: the port is not 0-65535") from None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise TransportError(f"bad address {address!r}: {problem}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TransportError(f"bad address {address!r}: {problem} (no path, query or fragment)")
    return parts.hostname, port


def format_address(host: str, port: int) -> str:
    """The URL of ``host:port`` (IPv6 hosts in brackets)."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
