"""An address's form, checked without its transport plugin, and a fix that passes the check.

``p2phost init`` writes a manifest before any plugin is installed, and a node meets an
address with a broken ``scheme://`` before it knows which transport to ask; both need the
form checked here. Where the transport is loaded its own ``check_address`` runs after this
(the same rules for the official schemes, so a fix given here passes there too).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from p2phost_sdk import AddressError, ipv6_bracketed, is_peer_id, parse_host_port, port_problem

#: A concrete address of each official scheme (every part filled in): the form a fix takes.
EXAMPLES = {
    "tcp": "tcp://127.0.0.1:7400", "quic": "quic://127.0.0.1:7400",
    "ws": "ws://127.0.0.1:7400", "mem": "mem://alice", "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222", "amqp": "amqp://guest:guest@127.0.0.1:5672/",
    "mqtt": "mqtt://127.0.0.1:1883", "postgresql": "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgres": "postgres://postgres@127.0.0.1:5432/postgres",
}
#: Schemes whose address must name its port (a broker's has a default one): a socket's,
#: which names no peer after '#' (their transports refuse any fragment).
_PORT_REQUIRED = {"tcp", "quic", "ws"}
#: Schemes whose address ends at the port (a websocket's may name a path, as
#: websocket-transport takes it: ws://HOST:PORT/PATH): their transports read it with the
#: SDK's ``parse_host_port``, which has the last word on them here.
_NO_PATH = {"tcp", "quic"}
#: Schemes of a broker or database holding inboxes: a dial or a letter names the peer
#: as the URL's fragment (``nats://HOST:PORT#PEERID``).
_INBOX = {"redis", "nats", "amqp", "mqtt", "postgresql", "postgres"}


def check_form(address: str, *, peer: bool = False) -> None:
    """AddressError when ``address`` is malformed in a way no transport accepts
    (whitespace, no ``scheme://``) or breaks the form of its official scheme. ``peer``:
    the address is dialled (the fix of a broker's names the peer, ``#PEERID``)."""
    fix = suggest(address, peer=peer)
    if any(c.isspace() for c in address):
        raise AddressError(address, "it contains whitespace (remove it)", expected=fix)
    if "://" not in address:
        raise AddressError(address, f"the address is malformed: `scheme://` expected, e.g. "
                           f"{fix}", expected=fix)
    scheme = address.split("://", 1)[0].lower()
    if scheme not in EXAMPLES or scheme == "mem":
        return  # another plugin's scheme (relay+tcp, ...): its transport checks it
    problem = _problem(scheme, address)
    if problem:
        example = EXAMPLES[scheme]
        told = problem if example in problem else f"{problem} (expected e.g. {example})"
        raise AddressError(address, told, expected=fix)


def _problem(scheme: str, address: str) -> str:
    try:
        parts = urlsplit(address)
    except ValueError as exc:  # an unclosed [IPv6 bracket
        return str(exc)
    try:
        port = parts.port
    except ValueError:
        return port_problem(parts.netloc, scheme)  # the transport's own words
    if not parts.hostname:
        return "no host"
    if port is None and scheme in _PORT_REQUIRED:
        return "no port"
    if scheme in _NO_PATH and parts.path not in ("", "/"):
        return "no path or query is allowed"
    if scheme in _PORT_REQUIRED and parts.query:
        return "no path or query is allowed"
    if scheme == "redis" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return "the path must be the database number, e.g. /0"
    if parts.fragment and scheme not in _PORT_REQUIRED and not is_peer_id(parts.fragment):
        return f"{parts.fragment!r} after '#' is not a peer id"
    if scheme == "ws" and (parts.fragment or parts.username or parts.password):
        # websocket-transport's own rule: a peer id after '#' follows a broker's address
        return "no query, fragment or user is allowed"
    if scheme in _NO_PATH:
        # What the words above leave out, the transport's own parser refuses (a peer id
        # after '#' follows a broker's address, not a socket's): so it is refused here too.
        try:
            parse_host_port(address, scheme=scheme)
        except AddressError as exc:
            return exc.problem
    return ""


def suggest(address: str, *, peer: bool = False) -> str:
    """``address`` mended as far as it can be (``tcp:/x`` -> ``tcp://x:7400``): a form
    :func:`check_form` accepts, else the scheme's example; ``peer``: a broker's address
    ends in ``#PEERID`` (the placeholder for the peer id ``p2phost run`` prints)."""
    mended = _mend(address)
    scheme = mended.split("://", 1)[0]
    return f"{mended}#PEERID" if peer and scheme in _INBOX and "#" not in mended else mended


def _mend(address: str) -> str:
    text = "".join(address.split())
    scheme, sep, rest = text.partition(":/") if "://" not in text else text.partition("://")
    scheme = scheme.lower() if sep and scheme.replace("+", "").isalnum() else ""
    if not scheme:
        scheme, rest = "tcp", text
    example = EXAMPLES.get(scheme)
    if example is None:
        return f"{scheme}://{rest.lstrip('/')}"
    rest = rest.lstrip("/")
    defaults = urlsplit(example)
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:  # tcp://::1:7400: the IPv6 host in brackets, if that is it
            netloc = ipv6_bracketed(parts.netloc)
            if netloc is None or "PORT" in netloc:
                return example
            parts = urlsplit(f"{scheme}://{netloc}{parts.path}")
            host, port = parts.hostname, parts.port
    except ValueError:
        return example
    if not host:
        return example
    netloc = parts.netloc if port is not None or defaults.port is None \
        else f"{parts.netloc}:{defaults.port}"
    path = parts.path
    if scheme == "redis" and not path.strip("/").isdigit():
        path = defaults.path
    elif scheme in _NO_PATH:
        path = ""
    elif not path:
        path = defaults.path
    # A peer id after '#' is kept where it belongs: a broker's address, not a socket's.
    peer = scheme not in _PORT_REQUIRED and is_peer_id(parts.fragment)
    fragment = f"#{parts.fragment}" if peer else ""
    mended = f"{scheme}://{netloc}{path}{fragment}"
    return example if _problem(scheme, mended) else mended
