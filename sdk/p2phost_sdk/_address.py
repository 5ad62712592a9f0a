"""``SCHEME://HOST:PORT`` addresses: the form of a stream transport (tcp, quic) that
listens on and dials a host and port, with nothing after them."""

from __future__ import annotations

from urllib.parse import urlsplit

from ._errors import AddressError


def parse_host_port(address: str, *, scheme: str) -> tuple[str, int]:
    """``SCHEME://HOST:PORT`` as ``(host, port)`` (an IPv6 host unbracketed; port 0 is
    any free port); :class:`AddressError` says what is wrong and names the form."""
    expected = f"{scheme}://HOST:PORT, e.g. {scheme}://127.0.0.1:7400"
    problem = f"expected {expected}"
    try:
        parts = urlsplit(address)
    except ValueError as exc:  # an unclosed [IPv6 bracket
        raise AddressError(address, f"{exc} ({problem})", expected=expected) from None
    try:
        port = parts.port
    except ValueError:
        raise AddressError(address, port_problem(parts.netloc, scheme),
                           expected=expected) from None
    if parts.scheme != scheme or not parts.hostname or port is None:
        raise AddressError(address, problem, expected=expected)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AddressError(address, f"{problem} (no path, query or fragment)",
                           expected=expected)
    return parts.hostname, port


def format_host_port(host: str, port: int, *, scheme: str) -> str:
    """The ``SCHEME://HOST:PORT`` URL of ``host`` and ``port`` (an IPv6 host in
    brackets): what :func:`parse_host_port` reads back."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def port_problem(netloc: str, scheme: str) -> str:
    """Why ``urlsplit`` found no port in ``netloc``: an IPv6 host without its brackets
    (``::1:7400`` reads as the host ``""`` and the port ``:1:7400``), else a bad port."""
    mended = ipv6_bracketed(netloc)
    if mended is not None:
        return f"an IPv6 host goes in brackets: {scheme}://{mended}"
    return "the port is not 0-65535"


def ipv6_bracketed(netloc: str) -> str | None:
    """``netloc``'s host and port with its IPv6 host put in brackets (``::1:7400`` ->
    ``[::1]:7400``; ``PORT`` where none is written); None if its host is no bare IPv6."""
    import ipaddress

    host = netloc.rpartition("@")[2]
    head, _, port = host.rpartition(":")
    # ::1:7400 is an IPv6 address too: the port the user meant is the likelier reading.
    for candidate, written in ((head, port if port.isdigit() else "PORT"), (host, "PORT")):
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        return f"[{candidate}]:{written}"
    return None
