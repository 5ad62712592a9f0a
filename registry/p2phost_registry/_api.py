"""The JSON API for the CLI and the upload endpoints (ours and the legacy one twine speaks)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message

from p2phost_sdk import is_valid_name, normalize_name

from ._errors import BadRequest, NotFound, PayloadTooLarge
from ._openapi import OPENAPI
from ._records import PluginRecord, PublishResult, VersionRecord
from ._search import search
from ._state import UPLOAD_TIMEOUT, registry_of
from ._tokens import TokenInfo

JSON = "application/json"
#: Room for the multipart envelope and the small fields around the file.
FORM_OVERHEAD = 256 * 1024


def _dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def version_json(version: VersionRecord) -> dict[str, Any]:
    """One version as the API shows it."""
    meta = version.metadata
    return {
        "version": version.version,
        "summary": version.summary,
        "kinds": version.kinds,
        "host_api": version.host_api,
        "requires": meta.get("requires", {}),
        "provides": meta.get("provides", {}),
        "config": meta.get("config", {}),
        "capabilities": meta.get("capabilities", []),
        "requires_python": version.requires_python,
        "yanked": version.yanked,
        "yanked_reason": version.yanked_reason,
        "uploaded": version.uploaded,
        "downloads": version.downloads,
        "license": version.license,
        "urls": [{"label": label, "url": url} for label, url in version.urls],
        "files": [
            {
                "filename": f.filename,
                "url": f.url,
                "sha256": f.sha256,
                "size": f.size,
                "packagetype": f.packagetype,
                "uploaded": f.uploaded,
                "signature_url": f.url + ".sig" if f.has_signature else None,
                "signed": f.publisher_key is not None,
                "publisher_key": f.publisher_key,
            }
            for f in version.files
        ],
    }


def plugin_json(plugin: PluginRecord) -> dict[str, Any]:
    """One plugin with every version, newest first."""
    latest = plugin.latest()
    return {
        "name": plugin.name,
        "display_name": plugin.display_name,
        "distribution": plugin.distribution,
        "summary": plugin.summary,
        "latest": latest.version if latest else None,
        "owners": list(plugin.owners),
        "downloads": plugin.downloads,
        "created": plugin.created,
        "updated": plugin.updated,
        "versions": [version_json(v) for v in plugin.versions],
    }


async def search_plugins(request: Request) -> Response:
    """GET /api/v1/plugins?q=&kind=&host_api=&sort="""
    reg, epoch, params = registry_of(request), registry_of(request).epoch, request.query_params
    plugins = await reg.plugins()
    hits = search(plugins, params.get("q", ""), params.get("kind", ""),
                  params.get("host_api", ""), params.get("sort", "relevance"))
    body = _dumps({"plugins": [
        {
            "name": h.plugin.name,
            "summary": h.latest.summary,
            "latest": h.latest.version,
            "kinds": h.latest.kinds,
            "host_api": h.latest.host_api,
            "downloads": h.plugin.downloads,
            "updated": h.plugin.updated,
        }
        for h in hits
    ]})
    return reg.cached(request, epoch, "", body, JSON)


async def plugin_info(request: Request) -> Response:
    """GET /api/v1/plugins/{name}"""
    reg = registry_of(request)
    epoch = reg.epoch
    plugin = await reg.call(reg.store.plugin, request.path_params["name"])
    return reg.cached(request, epoch, plugin.name, _dumps(plugin_json(plugin)), JSON)


async def version_info(request: Request) -> Response:
    """GET /api/v1/plugins/{name}/{version}"""
    reg = registry_of(request)
    epoch = reg.epoch
    plugin = await reg.call(reg.store.plugin, request.path_params["name"])
    wanted = request.path_params["version"]
    version = plugin.version(wanted)
    if version is not None:
        return reg.cached(request, epoch, plugin.name, _dumps(version_json(version)), JSON)
    known = ", ".join(v.version for v in plugin.versions) or "none"
    raise NotFound(f"{plugin.name} has no version {wanted} (versions: {known})")


async def audit_log(request: Request) -> Response:
    """GET /api/v1/plugins/{name}/audit"""
    reg = registry_of(request)
    plugin = await reg.call(reg.store.plugin, request.path_params["name"])
    entries = await reg.call(reg.store.audit_log, plugin.name)
    return JSONResponse({"entries": [e.__dict__ for e in entries]})


async def read_form(request: Request, limit: int) -> FormData:
    """The request's multipart form, refusing bodies over ``limit`` before reading them."""
    length = request.headers.get("content-length", "")
    if length and not length.isdigit():
        raise BadRequest("Content-Length is not a number")
    if length and int(length) > limit + FORM_OVERHEAD:
        raise PayloadTooLarge(f"the upload is {length} bytes; this registry accepts {limit}")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit + FORM_OVERHEAD:
            raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes")
        return message

    try:
        return await Request(request.scope, receive).form(
            max_files=4, max_fields=64, max_part_size=1024 * 1024
        )
    except (HTTPException, MultiPartException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise BadRequest(f"malformed multipart form data: {detail}") from exc


async def _publish_form(
    request: Request, file_field: str, sig_field: str, *, legacy: bool = False
) -> PublishResult:
    reg = registry_of(request)
    actor = await reg.actor(request)  # before reading what may be a large body
    form = await read_form(request, reg.store.max_upload)
    try:
        action = form.get(":action")
        if legacy and action != "file_upload":
            raise BadRequest(f":action {action!r} is not supported; only file_upload is")
        upload = form.get(file_field)
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise BadRequest(
                f"the multipart field `{file_field}` with the wheel or sdist is missing"
            )
        signature = form.get(sig_field)
        sig = await signature.read() if isinstance(signature, UploadFile) else None
        digest = form.get("sha256_digest") if legacy else None
        tmp = reg.store.new_upload_path()
        try:
            await reg.call(_spool, upload, tmp, timeout=UPLOAD_TIMEOUT)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        result = await reg.call(
            reg.store.publish, actor, tmp, Path(upload.filename).name, signature=sig,
            expected_sha256=digest if isinstance(digest, str) else None, timeout=UPLOAD_TIMEOUT,
        )
    finally:
        await form.close()
    reg.changed()
    return result


def _spool(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)


async def upload(request: Request) -> Response:
    """POST /api/v1/upload (multipart ``file``, optional ``signature``)."""
    result = await _publish_form(request, "file", "signature")
    return JSONResponse(
        {"name": result.name, "version": result.version, "filename": result.filename,
         "url": f"/plugins/{result.name}/{result.version}"},
        status_code=201,
    )


async def legacy_upload(request: Request) -> Response:
    """POST /legacy/ as twine and uv publish send it."""
    result = await _publish_form(request, "content", "gpg_signature", legacy=True)
    return PlainTextResponse(f"OK: {result.filename}\n")


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


async def yank(request: Request) -> Response:
    """POST /api/v1/plugins/{name}/{version}/yank {"reason": "..."} and .../unyank"""
    reg = registry_of(request)
    actor = await reg.actor(request)
    body = await _json_body(request)
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest('"reason" must be a string')
    yanking = request.url.path.endswith("/yank")
    name, version = request.path_params["name"], request.path_params["version"]
    stored = await reg.call(reg.store.set_yanked, actor, name, version, reason, yanking)
    reg.changed()
    return JSONResponse({"name": normalize_name(name), "version": stored, "yanked": yanking,
                         "yanked_reason": reason if yanking else None})


async def add_owner(request: Request) -> Response:
    """POST /api/v1/plugins/{name}/owners {"owner": "..."}"""
    reg = registry_of(request)
    actor = await reg.actor(request)
    owner = (await _json_body(request)).get("owner")
    if not isinstance(owner, str) or not is_valid_name(owner):
        raise BadRequest('send {"owner": "NAME"}: letters, digits, "-", "_" and "."')
    await reg.call(reg.store.add_owner, actor, request.path_params["name"], owner)
    reg.changed()
    plugin = await reg.call(reg.store.plugin, request.path_params["name"])
    return JSONResponse({"name": plugin.name, "owners": list(plugin.owners)})


async def remove_owner(request: Request) -> Response:
    """DELETE /api/v1/plugins/{name}/owners/{owner}"""
    reg = registry_of(request)
    actor = await reg.actor(request)
    name, owner = request.path_params["name"], request.path_params["owner"]
    owners = await reg.call(reg.store.remove_owner, actor, name, owner)
    reg.changed()
    return JSONResponse({"name": normalize_name(name), "owners": list(owners)})


def _token_json(info: TokenInfo) -> dict[str, Any]:
    return {"prefix": info.prefix, "owner": info.owner, "scopes": list(info.scopes),
            "created": info.created, "expires": info.expires, "revoked": info.revoked,
            "last_used": info.last_used, "state": info.state}


async def tokens(request: Request) -> Response:
    """GET /api/v1/tokens: the tokens of the calling token's owner (never their secrets)."""
    reg = registry_of(request)
    actor = await reg.actor(request)
    found = await reg.call(reg.store.tokens, actor.owner)
    return JSONResponse({"owner": actor.owner, "tokens": [_token_json(t) for t in found]})


async def end_token(request: Request) -> Response:
    """POST /api/v1/tokens/{prefix}/revoke, or .../expire {"days": N}: one of the owner's."""
    reg = registry_of(request)
    actor = await reg.actor(request)
    prefix = request.path_params["prefix"]
    if request.url.path.endswith("/revoke"):
        info = await reg.call(reg.store.revoke_token, prefix, actor.owner)
    else:
        days = (await _json_body(request)).get("days")
        if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
            raise BadRequest('send {"days": N}, N >= 0 (0: expire now)')
        info = await reg.call(reg.store.expire_token, prefix, float(days), actor.owner)
    reg.changed()
    return JSONResponse(_token_json(info))


async def publisher_key(request: Request) -> Response:
    """POST /api/v1/publisher-key {"publisher_key": "ed25519:...", "proof": "BASE64"}"""
    reg = registry_of(request)
    actor = await reg.actor(request)
    body = await _json_body(request)
    key, proof = body.get("publisher_key"), body.get("proof")
    if not isinstance(key, str) or not isinstance(proof, str):
        raise BadRequest('send {"publisher_key": "ed25519:...", "proof": "BASE64"}; '
                         "p2phost key register does")
    try:
        raw_proof = base64.b64decode(proof, validate=True)
    except ValueError as exc:
        raise BadRequest('"proof" is not base64') from exc
    previous = await reg.call(reg.store.register_publisher_key, actor, key, raw_proof)
    return JSONResponse({"owner": actor.owner, "publisher_key": key, "previous": previous})


async def openapi(request: Request) -> Response:
    """GET /api/v1/openapi.json"""
    return JSONResponse(OPENAPI)


ROUTES = [
    Route("/api/v1/openapi.json", openapi),
    Route("/api/v1/plugins", search_plugins),
    Route("/api/v1/upload", upload, methods=["POST"]),
    Route("/api/v1/publisher-key", publisher_key, methods=["POST"]),
    Route("/api/v1/plugins/{name}", plugin_info),
    Route("/api/v1/plugins/{name}/audit", audit_log),
    Route("/api/v1/plugins/{name}/owners", add_owner, methods=["POST"]),
    Route("/api/v1/plugins/{name}/owners/{owner}", remove_owner, methods=["DELETE"]),
    Route("/api/v1/tokens", tokens),
    Route("/api/v1/tokens/{prefix}/revoke", end_token, methods=["POST"]),
    Route("/api/v1/tokens/{prefix}/expire", end_token, methods=["POST"]),
    Route("/api/v1/plugins/{name}/{version}", version_info),
    Route("/api/v1/plugins/{name}/{version}/yank", yank, methods=["POST"]),
    Route("/api/v1/plugins/{name}/{version}/unyank", yank, methods=["POST"]),
    Route("/legacy/", legacy_upload, methods=["POST"]),
]
