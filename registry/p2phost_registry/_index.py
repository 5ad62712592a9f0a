"""Routes of the simple index and of the files it links to."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from p2phost_sdk import normalize_name

from . import _simple
from ._cache import NOT_ACCEPTABLE
from ._errors import NotFound, RegistryError
from ._state import registry_of


class NotAcceptable(RegistryError):
    """The client accepts none of the simple API's content types."""

    status = 406


def _variant(request: Request) -> str:
    variant = registry_of(request).cache.variant(
        request.url.path, request.headers.get("accept", "").encode("latin-1")
    )
    if variant == NOT_ACCEPTABLE:
        raise NotAcceptable(
            f"none of the Accept types is served; ask for {_simple.JSON_TYPE}, "
            f"{_simple.HTML_TYPE} or text/html"
        )
    return variant


async def simple_root(request: Request) -> Response:
    """GET /simple/"""
    reg, variant = registry_of(request), _variant(request)
    epoch = reg.epoch
    names = sorted(set((await reg.call(reg.store.distributions)).values()))
    body = _simple.root_json(names) if variant == _simple.JSON_TYPE else _simple.root_html(names)
    return reg.cached(request, epoch, "", body, _content_type(variant), variant)


async def simple_project(request: Request) -> Response:
    """GET /simple/{distribution}/ (other spellings redirect to the normalised one)."""
    name = request.path_params["name"]
    if normalize_name(name) != name or not request.url.path.endswith("/"):
        return RedirectResponse(f"/simple/{normalize_name(name)}/", status_code=301)
    reg, variant = registry_of(request), _variant(request)
    epoch = reg.epoch
    plugin = await reg.call(reg.store.plugin_of_distribution, name)
    if variant == _simple.JSON_TYPE:
        body = _simple.project_json(plugin)
    else:
        body = _simple.project_html(plugin)
    return reg.cached(request, epoch, plugin.name, body, _content_type(variant), variant)


def _content_type(variant: str) -> str:
    return "text/html; charset=utf-8" if variant == _simple.TEXT_HTML else variant


async def files(request: Request) -> Response:
    """GET /files/{name}/{filename}, its ``.metadata`` sidecar and its ``.sig`` signature."""
    reg = registry_of(request)
    name, filename = normalize_name(request.path_params["name"]), request.path_params["filename"]
    if filename.endswith(".metadata"):
        epoch = reg.epoch
        text = await reg.call(reg.store.core_metadata, filename.removesuffix(".metadata"))
        return reg.cached(request, epoch, name, text.encode(), "text/plain; charset=utf-8")
    signature = filename.endswith(".sig")
    record, path = await reg.call(reg.store.file, filename.removesuffix(".sig"))
    if record.plugin != name or (signature and not record.has_signature):
        raise NotFound(f"no file {filename} for {name}")
    if signature:
        return FileResponse(path.with_name(path.name + ".sig"),
                            media_type="application/octet-stream")
    if request.method == "GET" and request.headers.get("range", "bytes=0-") == "bytes=0-":
        await reg.call(reg.store.count_download, name)
        reg.downloaded(name)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"etag": f'"{record.sha256}"', "cache-control": "max-age=31536000, immutable"},
    )


async def robots(request: Request) -> Response:
    """GET /robots.txt: keep crawlers out of the file downloads."""
    return PlainTextResponse("User-agent: *\nDisallow: /files/\n")


ROUTES = [
    Route("/simple/", simple_root),
    Route("/simple/{name}/", simple_project),
    Route("/simple/{name}", simple_project),
    Route("/files/{name}/{filename}", files, methods=["GET", "HEAD"]),
    Route("/robots.txt", robots),
]
