"""Rendered pages kept in memory and served before the framework sees the request.

Reads outnumber writes by orders of magnitude, so every GET that renders a page stores
the bytes here; any write (here or, through the store's generation, in another process)
drops them. The fast path answers a cached GET or HEAD straight from the ASGI scope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from ._simple import negotiate

#: Past this many entries the cache starts afresh (query strings make keys unbounded).
MAX_ENTRIES = 20_000
_NEGOTIATED_MAX = 256
NOT_ACCEPTABLE = "406"


@dataclass(frozen=True)
class Page:
    """A rendered response: its body and the headers that go with it."""

    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    etag: bytes


class PageCache:
    """Rendered pages keyed by path, query string and negotiated content type."""

    def __init__(self) -> None:
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
        """The cached page, if any."""
        return self._pages.get((path, query, variant))

    def put(
        self, path: str, query: bytes, variant: str, tag: str, body: bytes, content_type: str
    ) -> Page:
        """Store a rendered page; ``tag`` (a plugin name or "") lets :meth:`drop` find it."""
        if len(self._pages) >= MAX_ENTRIES:
            self.clear()
        etag = b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
        headers = (
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"etag", etag),
            (b"vary", b"Accept"),
            (b"cache-control", b"max-age=10, public"),
        )
        page = Page(body, headers, etag)
        key = (path, query, variant)
        self._pages[key] = page
        self._tags.setdefault(tag, set()).add(key)
        return page

    def drop(self, tag: str) -> None:
        """Forget the pages of one plugin (a download changed its count)."""
        for key in self._tags.pop(tag, set()):
            self._pages.pop(key, None)

    def clear(self) -> None:
        """Forget every page."""
        self._pages.clear()
        self._tags.clear()


class FastPath:
    """ASGI middleware: answer cached GET/HEAD requests without touching the app."""

    def __init__(self, app: ASGIApp, cache: PageCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        accept = b""
        if_none_match = None
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value
            elif key == b"if-none-match":
                if_none_match = value
        path = scope["path"]
        page = self.cache.get(path, scope["query_string"], self.cache.variant(path, accept))
        if page is None:
            await self.app(scope, receive, send)
            return
        if if_none_match is not None and page.etag in if_none_match:
            await send({"type": "http.response.start", "status": 304,
                        "headers": [(b"etag", page.etag), (b"vary", b"Accept")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": page.headers})
        body = b"" if scope["method"] == "HEAD" else page.body
        await send({"type": "http.response.body", "body": body})
