"""Routes of the simple index and of the files it links to."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from p2phost_sdk import normalize_name

from . import _simple
from ._cache import NOT_ACCEPTABLE, etag_matches
from ._errors import NotAcceptable, NotFound
from ._fastpath import client_address
from ._files import MAX_FILE, ServedFile, file_headers
from ._state import registry_of

log = logging.getLogger("p2phost.registry")


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
    """GET /files/{name}/{filename}, its ``.metadata`` sidecar and its ``.sig`` signature.

    Each is served only under its own plugin's path, with a strong ETag; a file read once
    is kept in memory (files are immutable) and served by the fast path from then on.
    """
    reg = registry_of(request)
    name, filename = normalize_name(request.path_params["name"]), request.path_params["filename"]
    sidecar = next((s for s in (".metadata", ".sig") if filename.endswith(s)), "")
    record, path = await reg.call(reg.store.file, filename.removesuffix(sidecar) if sidecar
                                  else filename)
    if record.plugin != name:
        raise NotFound(f"no file {filename} for {name}")
    if sidecar == ".metadata":
        if record.core_metadata_sha256 is None:
            raise NotFound(f"no metadata for {record.filename}")
        body = (await reg.call(reg.store.core_metadata, record.filename)).encode()
        etag, content_type = record.core_metadata_sha256, "text/plain; charset=utf-8"
    elif sidecar == ".sig":
        if not record.has_signature:
            raise NotFound(f"no file {filename} for {name}")
        body = await reg.call(path.with_name(path.name + ".sig").read_bytes)
        etag, content_type = hashlib.sha256(body).hexdigest(), "application/octet-stream"
    else:
        etag, content_type = record.sha256, "application/octet-stream"
        body = b""
    tag = f'"{etag}"'.encode()
    counted = not sidecar and request.method == "GET" and request.headers.get(
        "range", "bytes=0-") == "bytes=0-"
    if_none_match = request.headers.get("if-none-match")
    if etag_matches(if_none_match.encode("latin-1") if if_none_match else None, tag):
        return Response(status_code=304, headers={"etag": tag.decode()})
    if counted:
        reg.downloads.count(client_address(request.scope), record.plugin, record.version,
                            record.filename)
    if not sidecar and record.size > MAX_FILE:
        return FileResponse(path, media_type=content_type, headers=dict(
            (k.decode(), v.decode()) for k, v in file_headers(content_type, record.size, tag)
            if k != b"content-length"))
    intact = True
    if not sidecar:
        body, digest = await reg.call(_read_with_digest, path)
        # Bytes that no longer match the recorded sha256 (damaged storage) are served as they
        # are, so the client's check refuses them, but never kept: a repaired file is served
        # from the next request on.
        intact = digest == record.sha256
        if not intact:
            log.error("stored file %s does not match its recorded sha256", record.filename)
    served = ServedFile(body, file_headers(content_type, len(body), tag), tag, record.plugin,
                        record.version, record.filename, counted=not sidecar)
    if sidecar != ".sig" and intact:  # signatures are read from storage each time
        reg.files.put(request.scope["path"], served)
    if "range" in request.headers and not sidecar:
        return FileResponse(path, media_type=content_type, headers={"etag": tag.decode()})
    headers = {k.decode(): v.decode() for k, v in served.headers if k != b"content-length"}
    return Response(body, headers=headers)


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


def _read_with_digest(path: Path) -> tuple[bytes, str]:
    body = path.read_bytes()
    return body, hashlib.sha256(body).hexdigest()
