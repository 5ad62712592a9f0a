"""PyPI's JSON API, ``/pypi/NAME/json`` and ``/pypi/NAME/VERSION/json``, which many tools read.

NAME is a distribution name (as on PyPI) or a plugin name.

The shape follows https://docs.pypi.org/api/json/; URLs are absolute, built from the
configured public URL (never from request headers, so the responses are cacheable).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from p2phost_sdk import normalize_name

from ._errors import NotFound
from ._records import FileRecord, PluginRecord, VersionRecord
from ._state import registry_of

JSON = "application/json"


def _file(base: str, record: FileRecord, version: VersionRecord) -> dict[str, Any]:
    python = "source" if record.packagetype == "sdist" else record.filename.split("-")[-3]
    return {
        "filename": record.filename,
        "url": base + record.url,
        "digests": {"sha256": record.sha256},
        "size": record.size,
        "packagetype": record.packagetype,
        "python_version": python,
        "requires_python": version.requires_python,
        "upload_time": record.uploaded[:19],
        "upload_time_iso_8601": record.uploaded,
        "yanked": version.yanked,
        "yanked_reason": version.yanked_reason,
        "has_sig": record.has_signature,
    }


def pypi_json(base: str, plugin: PluginRecord, version: VersionRecord, *, releases: bool) -> bytes:
    """The PyPI JSON document of ``plugin`` at ``version`` (with every release if asked)."""
    urls = dict(version.urls)
    info: dict[str, Any] = {
        "name": plugin.distribution,
        "version": version.version,
        "summary": version.summary,
        "description": version.readme,
        "description_content_type": version.readme_type,
        "license": version.license,
        "home_page": urls.get("Homepage"),
        "project_urls": urls or None,
        "requires_python": version.requires_python,
        "package_url": f"{base}/plugins/{plugin.name}",
        "project_url": f"{base}/plugins/{plugin.name}",
        "release_url": f"{base}/plugins/{plugin.name}/{version.version}",
        "yanked": version.yanked,
        "yanked_reason": version.yanked_reason,
        "keywords": ",".join(version.kinds),
        "classifiers": [],
        "downloads": {"last_day": -1, "last_week": -1, "last_month": -1},
    }
    document: dict[str, Any] = {
        "info": info,
        "last_serial": 0,
        "urls": [_file(base, f, version) for f in version.files],
        "vulnerabilities": [],
    }
    if releases:
        document["releases"] = {
            v.version: [_file(base, f, v) for f in v.files] for v in reversed(plugin.versions)
        }
    return json.dumps(document, separators=(",", ":")).encode()


async def project(request: Request) -> Response:
    """GET /pypi/{name}/json and /pypi/{name}/{version}/json"""
    reg = registry_of(request)
    epoch = reg.epoch
    raw = request.path_params["name"]
    wanted = request.path_params.get("version")
    if normalize_name(raw) != raw:
        tail = f"{wanted}/json" if wanted else "json"
        return RedirectResponse(f"/pypi/{normalize_name(raw)}/{tail}", status_code=301)
    try:
        plugin = await reg.call(reg.store.plugin, raw)
    except NotFound:
        # Tools ask by distribution name (p2phost-tcp-transport for tcp-transport).
        plugin = await reg.call(reg.store.plugin_of_distribution, raw)
    version = plugin.version(wanted) if wanted else plugin.latest()
    if version is None:
        raise NotFound(f"{plugin.name} has no version {wanted or '(none published)'}")
    body = pypi_json(reg.public_url, plugin, version, releases=wanted is None)
    return reg.cached(request, epoch, plugin.name, body, JSON)


ROUTES = [
    Route("/pypi/{name}/json", project),
    Route("/pypi/{name}/{version}/json", project),
]
