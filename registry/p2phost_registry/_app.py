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

from . import _api, _index, _web
from ._cache import FastPath
from ._errors import RegistryError
from ._state import Registry
from ._store import Store


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/legacy", "/simple/", "/files/"))


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    if _wants_json(request):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    return _web.error_page(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"nothing at {request.url.path}"
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=exc.status_code)
    return _web.error_page(exc.status_code, message)


def create_app(store: Store, *, watch: bool = True) -> ASGIApp:
    """The registry application over ``store``.

    With ``watch``, a background task (owned by the app's lifespan) drops the page cache
    when another process changes the store.
    """
    registry = Registry(store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(registry.watch()) if watch else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    app = Starlette(
        routes=[*_index.ROUTES, *_api.ROUTES, *_web.ROUTES],
        exception_handlers={RegistryError: _registry_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.registry = registry
    return FastPath(app, registry.cache)
