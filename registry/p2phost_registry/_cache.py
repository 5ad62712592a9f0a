"""Rendered pages kept in memory and served before the framework sees the request.

Reads outnumber writes by orders of magnitude, so every GET that renders a page stores
the bytes here; any change (here or, through LISTEN/NOTIFY or the store's generation, in
another process) drops them. A page lives at most :data:`PAGE_TTL` seconds, which is how
download counts (never an invalidation) reach the pages. A page depends only on its key:
path, query string and negotiated content type; never on other request headers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from ._simple import negotiate

#: Past this many entries the cache starts afresh (query strings make keys unbounded).
MAX_ENTRIES = 20_000
_NEGOTIATED_MAX = 256
NOT_ACCEPTABLE = "406"
#: Seconds a rendered page is served before it is rendered again (fresh download counts).
PAGE_TTL = 60.0
#: How long clients may use a page without asking again: the staleness window of a new
#: release or a yank for ``p2phost plugin install``, pip and uv (docs/registry.md).
PAGE_CACHE_CONTROL = b"max-age=10, public"


@dataclass(frozen=True)
class Page:
    """A rendered response: its body and the headers that go with it."""

    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    etag: bytes
    expires: float = 0.0


def make_page(body: bytes, content_type: str, ttl: float = PAGE_TTL) -> Page:
    """A page for ``body`` with its ETag and caching headers."""
    etag = b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
    headers = (
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"etag", etag),
        (b"vary", b"Accept"),
        (b"cache-control", PAGE_CACHE_CONTROL),
    )
    return Page(body, headers, etag, time.monotonic() + ttl)


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """Whether an If-None-Match header matches ``etag`` (weak comparison, ``*`` matches)."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


class PageCache:
    """Rendered pages keyed by path, query string and negotiated content type."""

    def __init__(self, ttl: float = PAGE_TTL) -> None:
        self.ttl = ttl
        self._pages: dict[tuple[str, bytes, str], Page] = {}
        self._tags: dict[str, set[tuple[str, bytes, str]]] = {}
        self._negotiated: dict[bytes, str] = {}

    def variant(self, path: str, accept: bytes) -> str:
        """The content type a request gets (only /simple/ negotiates; "" elsewhere)."""
        if not path.startswith("/simple/"):
            return ""
        found = self._negotiated.get(accept)
        if found is None:
            found = negotiate(accept.decode("latin-1")) or NOT_ACCEPTABLE
            if len(self._negotiated) < _NEGOTIATED_MAX:
                self._negotiated[accept] = found
        return found

    def get(self, path: str, query: bytes, variant: str) -> Page | None:
        """The cached page, if any and not expired."""
        page = self._pages.get((path, query, variant))
        if page is not None and page.expires < time.monotonic():
            return None
        return page

    def put(self, path: str, query: bytes, variant: str, tag: str, page: Page) -> None:
        """Store a rendered page; ``tag`` (a plugin name or "") lets :meth:`drop` find it."""
        if len(self._pages) >= MAX_ENTRIES:
            self.clear()
        key = (path, query, variant)
        self._pages[key] = page
        self._tags.setdefault(tag, set()).add(key)

    def drop(self, tag: str) -> None:
        """Forget the pages of one plugin."""
        for key in self._tags.pop(tag, set()):
            self._pages.pop(key, None)

    def clear(self) -> None:
        """Forget every page."""
        self._pages.clear()
        self._tags.clear()
