"""The registry's ASGI application: one store, three faces, a cache in front."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from . import _api, _index, _pypi_json, _web
from ._cache import PAGE_TTL, PageCache
from ._errors import RegistryError
from ._fastpath import FastPath
from ._state import DEFAULT_PUBLIC_URL, WATCH_INTERVAL, Registry
from ._store import Store


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/legacy", "/simple/", "/files/", "/pypi/"))


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    if _wants_json(request):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    return _web.error_page(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"nothing at {request.url.path}"
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {})
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)
    response = _web.error_page(exc.status_code, message)
    response.headers.update(headers)
    return response


def create_app(
    store: Store, *, watch: bool = True, public_url: str = DEFAULT_PUBLIC_URL,
    page_ttl: float = PAGE_TTL, watch_interval: float = WATCH_INTERVAL,
) -> ASGIApp:
    """The registry application over ``store``, showing ``public_url`` as its address.

    Background tasks owned by the app's lifespan write download counts (at most once a
    second) and, with ``watch``, drop the page cache when another process changes the store
    (told at once through LISTEN/NOTIFY on PostgreSQL; found by reading the store's
    generation every ``watch_interval`` seconds, on SQLite, or as the safety net).
    """
    registry = Registry(store, PageCache(page_ttl), public_url=public_url,
                        watch_interval=watch_interval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(registry.downloads.flush_forever(registry.write_downloads))]
        if watch:
            tasks.append(asyncio.create_task(registry.watch()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = Starlette(
        routes=[*_index.ROUTES, *_api.ROUTES, *_pypi_json.ROUTES, *_web.ROUTES],
        exception_handlers={RegistryError: _registry_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.registry = registry
    return FastPath(app, registry.cache, registry.files, registry.downloads)
