"""Kept registry answers: their freshness (RFC 9111), and asking again whether they are
still current, without importing urllib, http.client, email or json.

The freshness rules here are the ones the installer's response cache uses
(``_install._responses`` imports them); :func:`revalidate` lets a replay of
``plugin install --yes --refresh`` (``p2phost._replay``) ask each registry, as the
installer would, with ``If-None-Match``: only when every answer is ``304 Not Modified``
(each kept answer then fresh again, as the installer's 304 makes it) does the replay
stand. Anything else (another status, an https or proxied registry, a name or a header
this small client does not take) and the full installer asks instead.
"""

from __future__ import annotations

import os
import time

from . import __version__

# Not typing.TYPE_CHECKING: importing typing costs more than a replay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Directives of ``Cache-Control`` that forbid using a kept answer without asking.
_REVALIDATE = frozenset({"no-cache"})
#: Most bytes of a 304's status line and headers read.
_MAX_HEAD = 64 * 1024
#: Longest one wait for the answer lasts (see :func:`_ask`).
_WAKE_EVERY = 0.2


def is_fresh(received: float, max_age: float, age: float, now: float) -> bool:
    """Whether an answer received at ``received`` may be used without asking (RFC 9111
    4.2): ``age`` (seconds it spent in caches before) plus its time here is under
    ``max_age``."""
    resident = now - received
    return resident >= 0 and age + resident < max_age


def freshness(cache_control: str | None) -> float | None:
    """Seconds of freshness ``Cache-Control`` grants (0: revalidate), None for ``no-store``."""
    max_age = 0.0
    for directive in (cache_control or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-store":
            return None
        if name in _REVALIDATE:
            return 0.0
        if name == "max-age":
            try:
                max_age = max(0.0, float(int(value.strip().strip('"'))))
            except ValueError:
                return 0.0  # a malformed max-age is stale (RFC 9111 4.2.1)
    return max_age


def cache_control(headers: Any) -> str | None:
    """Every ``Cache-Control`` line of ``headers`` (an ``http.client`` message) as one
    list (RFC 9110 5.3): a ``no-store`` in any line counts, not only in the first."""
    get_all = getattr(headers, "get_all", None)
    lines = get_all("Cache-Control") if get_all is not None else [headers.get("Cache-Control")]
    found = [line for line in lines or () if line is not None]
    return ", ".join(found) if found else None


def seconds(value: str | None) -> float:
    """An ``Age`` header's seconds (0 when absent or malformed)."""
    try:
        return max(0.0, float(int(value))) if value else 0.0
    except ValueError:
        return 0.0


class _Refused(Exception):
    """Not a 304 this client can take: the full installer asks."""


def _printable(text: str) -> str:
    # Printable ASCII only (URLs and ETags are): anything else is left to the installer.
    if not all(" " <= c <= "~" for c in text):
        raise _Refused(text)
    return text


def _ask(url: str, accept: str, etag: str, timeout: float) -> dict[str, str]:
    """The headers of a ``304`` to a conditional GET of ``url`` (lower-case names)."""
    import _socket

    if not url.startswith("http://"):
        raise _Refused(url)
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    if not host or "@" in hostport or "[" in hostport or not (port or "80").isdigit():
        raise _Refused(url)
    for value in (url, accept, etag):  # a CR or LF in a kept ETag would add header lines
        _printable(value)
    request = (
        f"GET /{path} HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: {hostport}\r\n"
        f"User-Agent: p2phost/{__version__}\r\nAccept: {accept}\r\n"
        f"If-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    )
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, int(port or 80)))
        sock.sendall(request.encode("ascii"))
        head = b""
        # A server trickling bytes must not hold the command longer than the whole
        # timeout. Each wait lasts at most _WAKE_EVERY: a Ctrl-C that lands just before
        # a wait begins does not interrupt it, and is acted on when the wait ends (as
        # the installer's ``_http._wakeups``).
        deadline = time.monotonic() + timeout
        sock.settimeout(min(timeout, _WAKE_EVERY))
        while b"\r\n\r\n" not in head:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
                continue
            if not chunk or len(head) > _MAX_HEAD or time.monotonic() > deadline:
                raise _Refused(url)
            head += chunk
    finally:
        sock.close()
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "304":
        raise _Refused(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise _Refused(line)
        name, value = name.strip().lower(), value.strip()
        if name in headers:
            # Cache-Control given twice is one list (RFC 9110 5.3), as cache_control()
            # reads it for the installer; any other field twice is left to the installer.
            if name != "cache-control":
                raise _Refused(line)
            value = f"{headers[name]}, {value}"
        headers[name] = value
    return headers


def _confirm(
    path: str, key: str, etag: str, body: bytes, max_age: float, headers: dict[str, str]
) -> tuple[Any, ...]:
    """Keep the answer at ``path`` fresh from now, as ``ResponseCache.confirm`` does after a
    304; its new record entry."""
    from ._fileops import head_line, replace_file  # not for a plain replay

    control = headers.get("cache-control")
    renewed = max_age if control is None else freshness(control)
    if renewed is None or renewed <= 0:
        raise _Refused("no-store")  # the installer drops it (or asks each time)
    etag = _printable(headers.get("etag") or etag)
    received, age = time.time(), seconds(headers.get("age"))
    head = head_line(key, etag, received, renewed, age)
    info = replace_file(path, head + body)
    return answer_entry(path, info, received, renewed, age, key, etag, len(head))


def answer_entry(path: str, info: os.stat_result, received: float, max_age: float, age: float,
          key: str, etag: str | None, head: int) -> tuple[Any, ...]:
    """A kept answer as a replay record holds it: its file at ``path`` (with ``info``, its
    stat, to know it again), its freshness, key and ETag, and the bytes of its head line."""
    return (path, info.st_ino, info.st_size, info.st_mtime_ns, received, max_age, age, key,
            etag, head)


def revalidate(answers: list[tuple[Any, ...]]) -> list[tuple[Any, ...]] | None:
    """Ask again for each recorded answer (see the module's docstring); the answers as kept
    now when every one was ``304 Not Modified``, else None."""
    if any(k.lower().endswith("_proxy") for k in os.environ):
        return None  # urllib would go through the proxy: the installer asks
    try:
        timeout = float(os.environ.get("P2PHOST_TIMEOUT") or 10.0)
        renewed = []
        for path, inode, size, mtime, _, max_age, _, key, etag, head in answers:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                kept = handle.read()
            if (info.st_ino, info.st_size, info.st_mtime_ns) != (
                inode,
                size,
                mtime,
            ) or etag is None:
                return None
            accept, _, url = key.partition(" ")
            headers = _ask(url, accept, etag, timeout)
            renewed.append(_confirm(path, key, etag, kept[head:], max_age, headers))
    except (_Refused, OSError, ValueError):
        return None
    return renewed
