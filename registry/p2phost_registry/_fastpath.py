"""ASGI middleware: cached pages and files answered straight from the ASGI scope.

A cached GET or HEAD never reaches the framework: the page cache answers pages, the file
cache answers files (and counts the download in memory). Anything else goes to the app.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ._cache import PAGE_CACHE_CONTROL, PageCache, etag_matches
from ._downloads import DownloadCounter
from ._files import FileCache

_VARY = (b"vary", b"Accept")
_EMPTY = {"type": "http.response.body", "body": b""}


def client_address(scope: Scope) -> str:
    """The client's address (uvicorn puts the proxy's X-Forwarded-For here when trusted)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


async def send_not_modified(send: Send, etag: bytes, vary: bool,
                            cache_control: bytes | None = None) -> None:
    """A 304 for a representation whose ETag the client holds, with the Cache-Control a 200
    would carry (RFC 9110 15.4.5: the client's copy is fresh again for that long)."""
    headers = [(b"etag", etag), *([_VARY] if vary else []),
               *([(b"cache-control", cache_control)] if cache_control else [])]
    await send({"type": "http.response.start", "status": 304, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


class FastPath:
    """Serve cached pages and files; pass everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, cache: PageCache, files: FileCache, downloads: DownloadCounter
    ) -> None:
        self.app = app
        self.cache = cache
        self.files = files
        self.downloads = downloads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        accept = b""
        if_none_match = None
        ranged = False
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value
            elif key == b"if-none-match":
                if_none_match = value
            elif key == b"range":
                ranged = True
        path = scope["path"]
        if path.startswith("/files/"):
            served = self.files.get(path)
            if served is None or ranged:
                await self.app(scope, receive, send)
                return
            if etag_matches(if_none_match, served.etag):
                await send_not_modified(send, served.etag, vary=False)
                return
            if scope["method"] == "HEAD":
                await send(served.start)
                await send(_EMPTY)
                return
            if served.counted:
                self.downloads.count(client_address(scope), served.plugin, served.version,
                                     served.filename)
            await send(served.start)
            await send(served.whole)
            return
        page = self.cache.get(path, scope["query_string"], self.cache.variant(path, accept))
        if page is None:
            await self.app(scope, receive, send)
            return
        if etag_matches(if_none_match, page.etag):
            await send_not_modified(send, page.etag, vary=True, cache_control=PAGE_CACHE_CONTROL)
            return
        await send({"type": "http.response.start", "status": 200, "headers": page.headers})
        body = b"" if scope["method"] == "HEAD" else page.body
        await send({"type": "http.response.body", "body": body})
