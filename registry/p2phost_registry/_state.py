"""What every request handler shares: the store, the caches, the download counter."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ._cache import PageCache, etag_matches, make_page
from ._downloads import DownloadCounter, Key
from ._files import FileCache
from ._records import Actor, PluginRecord
from ._store import Store

T = TypeVar("T")
log = logging.getLogger("p2phost.registry")
#: How often a server looks for changes made by other processes (seed, another server);
#: on PostgreSQL, LISTEN/NOTIFY tells it at once and this is only the safety net.
WATCH_INTERVAL = 1.0
#: The address pages show when no --public-url is configured.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8470"
DB_TIMEOUT = 10.0
#: Copying, validating and fsyncing a large upload may take longer than a query.
UPLOAD_TIMEOUT = 300.0


class Registry:
    """The store, the caches, and the epoch that keeps stale renders out of the page cache.

    ``public_url`` is configuration, never the request's Host header: a page must not
    depend on a header that is not part of its cache key.
    """

    def __init__(
        self, store: Store, cache: PageCache | None = None,
        public_url: str = DEFAULT_PUBLIC_URL, watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self.store = store
        self.watch_interval = watch_interval
        self.cache = cache or PageCache()
        self.files = FileCache()
        self.downloads = DownloadCounter()
        self.public_url = public_url.rstrip("/")
        # Bumped on every change; a page rendered across a change is not cached.
        self.epoch = 0
        self._plugins: tuple[int, float, list[PluginRecord]] | None = None

    async def call(
        self, fn: Callable[..., T], *args: Any, timeout: float = DB_TIMEOUT, **kwargs: Any
    ) -> T:
        """Run a blocking store call in the thread pool, with a timeout."""
        return await asyncio.wait_for(
            run_in_threadpool(functools.partial(fn, *args, **kwargs)), timeout
        )

    async def actor(self, request: Request) -> Actor:
        """Who sent the request: its Bearer token, or basic auth ``__token__:TOKEN``."""
        return await self.call(self.store.authenticate, token_from(request))

    async def plugins(self) -> list[PluginRecord]:
        """Every plugin (no READMEs), loaded once per epoch: each new search query reuses it."""
        epoch = self.epoch
        if (self._plugins is not None and self._plugins[0] == epoch
                and self._plugins[1] > time.monotonic()):
            return self._plugins[2]
        plugins = await self.call(self.store.plugins)
        if epoch == self.epoch:
            self._plugins = (epoch, time.monotonic() + self.cache.ttl, plugins)
        return plugins

    async def write_downloads(self, batch: dict[Key, int]) -> None:
        """Write a batch of download counts (the counter's flush)."""
        await self.call(self.store.add_downloads, batch)

    def changed(self) -> None:
        """Published data changed: drop every cached page."""
        self.epoch += 1
        self._plugins = None
        self.cache.clear()

    def cached(
        self,
        request: Request,
        epoch: int,
        tag: str,
        body: bytes,
        content_type: str,
        variant: str = "",
    ) -> Response:
        """A response for ``body``, kept in the cache when nothing changed while rendering."""
        page = make_page(body, content_type, self.cache.ttl)
        if epoch == self.epoch:
            self.cache.put(request.url.path, request.scope["query_string"], variant, tag, page)
        headers = {k.decode(): v.decode() for k, v in page.headers}
        headers.pop("content-length", None)
        if epoch != self.epoch:
            headers["cache-control"] = "no-cache"
        inm = request.headers.get("if-none-match")
        if etag_matches(inm.encode("latin-1") if inm else None, page.etag):
            return Response(status_code=304, headers={
                "etag": headers["etag"], "vary": "Accept",
                "cache-control": headers["cache-control"]})
        return Response(body, headers=headers)

    async def watch(self) -> None:
        """Drop the caches whenever another process changes the store, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll())
            if self.store.db.channel:
                group.create_task(self._listen())

    async def _poll(self) -> None:
        known = await self.call(self.store.generation)
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                current = await self.call(self.store.generation)
            except Exception as exc:  # a database hiccup must not stop the watcher
                log.warning("cannot read the store's generation: %s", exc)
                continue
            if current != known:
                known = current
                # Our own last write: the handler that made it already dropped the pages
                # (and it came after every earlier write); dropping them again would
                # re-render them with download counts long before PAGE_TTL.
                if current != self.store.db.written_generation:
                    self.changed()

    async def _listen(self) -> None:
        """LISTEN on the store's channel; every notification is a change somewhere."""
        import psycopg

        db = self.store.db
        while True:
            try:
                conn = await asyncio.wait_for(
                    psycopg.AsyncConnection.connect(str(db.url), autocommit=True), DB_TIMEOUT)
                async with conn:
                    await conn.execute(f'LISTEN "{db.channel}"')
                    self.changed()  # whatever happened while not listening
                    async for note in conn.notifies():
                        if note.payload != db.sender:  # our own writes dropped them already
                            self.changed()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("lost the change notifications (%s); listening again in 1s", exc)
                await asyncio.sleep(1.0)


def registry_of(request: Request) -> Registry:
    """The :class:`Registry` of the app serving ``request``."""
    registry: Registry = request.app.state.registry
    return registry


def token_from(request: Request) -> str | None:
    """The token in the Authorization header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if user == "__token__":
            return password or None
    return None
