"""What every request handler shares: the store, the page cache and how to use them."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ._cache import PageCache
from ._records import Actor, PluginRecord
from ._store import Store

T = TypeVar("T")
log = logging.getLogger("p2phost.registry")
#: How often a server looks for changes made by other processes (seed, another server).
WATCH_INTERVAL = 1.0
DB_TIMEOUT = 10.0
#: Copying, validating and fsyncing a large upload may take longer than a query.
UPLOAD_TIMEOUT = 300.0


class Registry:
    """The store, the page cache, and the epoch that keeps stale renders out of the cache."""

    def __init__(self, store: Store, cache: PageCache | None = None) -> None:
        self.store = store
        self.cache = cache or PageCache()
        # Bumped on every change; a page rendered across a change is not cached.
        self.epoch = 0
        self._plugins: tuple[int, list[PluginRecord]] | None = None

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
        if self._plugins is not None and self._plugins[0] == epoch:
            return self._plugins[1]
        plugins = await self.call(self.store.plugins)
        if epoch == self.epoch:
            self._plugins = (epoch, plugins)
        return plugins

    def downloaded(self, name: str) -> None:
        """A file of ``name`` was downloaded: drop the pages that show its count."""
        self._plugins = None
        self.cache.drop(name)
        self.cache.drop("")

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
        query = request.scope["query_string"]
        if epoch == self.epoch:
            page = self.cache.put(request.url.path, query, variant, tag, body, content_type)
            headers = {k.decode(): v.decode() for k, v in page.headers}
        else:
            headers = {"content-type": content_type, "vary": "Accept"}
        headers.pop("content-length", None)
        return Response(body, headers=headers)

    async def watch(self) -> None:
        """Drop the cache whenever another process changes the store. Runs until cancelled."""
        known = await self.call(self.store.generation)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                current = await self.call(self.store.generation)
            except Exception as exc:  # a database hiccup must not stop the watcher
                log.warning("cannot read the store's generation: %s", exc)
                continue
            if current != known:
                known = current
                self.changed()


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
