"""``tcp://HOST:PORT`` addresses: parsed for listening and dialling, formatted from a
socket's name."""

from __future__ import annotations

from urllib.parse import urlsplit

from p2phost_sdk import AddressError

EXPECTED = "tcp://HOST:PORT, e.g. tcp://127.0.0.1:7400"


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` as ``(host, port)``; AddressError says what is wrong."""
    problem = f"expected {EXPECTED}"
    try:
        parts = urlsplit(address)
    except ValueError as exc:  # an unclosed [IPv6 bracket
        raise AddressError(address, f"{exc} ({problem})", expected=EXPECTED) from None
    try:
        port = parts.port
    except ValueError:
        raise AddressError(address, "the port is not 0-65535", expected=EXPECTED) from None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise AddressError(address, problem, expected=EXPECTED)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AddressError(address, f"{problem} (no path, query or fragment)",
                           expected=EXPECTED)
    return parts.hostname, port


def format_address(host: str, port: int) -> str:
    """The URL of ``host:port`` (IPv6 hosts in brackets)."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
