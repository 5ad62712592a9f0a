"""The Python simple repository API: PEP 503 HTML and PEP 691 JSON, with PEP 592 yanking,
PEP 658/714 metadata sidecars and PEP 700 ``versions``, ``size`` and ``upload-time``."""

from __future__ import annotations

import json
from html import escape

from ._records import FileRecord, PluginRecord

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
API_VERSION = "1.1"

# Server preference among equal q-values: JSON first, as PEP 691 suggests.
_OFFERS = {
    JSON_TYPE: JSON_TYPE,
    "application/vnd.pypi.simple.latest+json": JSON_TYPE,
    HTML_TYPE: HTML_TYPE,
    "application/vnd.pypi.simple.latest+html": HTML_TYPE,
    TEXT_HTML: TEXT_HTML,
    "text/*": TEXT_HTML,
    "*/*": TEXT_HTML,
    "application/*": JSON_TYPE,
}
_RANK = {JSON_TYPE: 0, HTML_TYPE: 1, TEXT_HTML: 2}


def negotiate(accept: str) -> str | None:
    """The content type to answer an ``Accept`` header with, or None if none is acceptable."""
    if not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        offer = _OFFERS.get(media.lower())
        if offer is None or quality <= 0:
            continue
        candidate = (quality, -_RANK[offer], offer)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None


def _html_page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"<title>{escape(title)}</title>\n</head>\n<body>\n{body}</body>\n</html>\n"
    ).encode()


def root_html(names: list[str]) -> bytes:
    """The PEP 503 project list."""
    links = "".join(f'<a href="/simple/{n}/">{escape(n)}</a>\n' for n in names)
    return _html_page("Simple index", links)


def root_json(names: list[str]) -> bytes:
    """The PEP 691 project list."""
    return json.dumps(
        {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names]},
        separators=(",", ":"),
    ).encode()


def _files(plugin: PluginRecord) -> list[tuple[FileRecord, str | None, str | None]]:
    """Every file with its yank reason (None: not yanked) and Requires-Python, oldest first."""
    out: list[tuple[FileRecord, str | None, str | None]] = []
    for version in reversed(plugin.versions):
        reason = (version.yanked_reason or "") if version.yanked else None
        out.extend((f, reason, version.requires_python) for f in version.files)
    return out


def project_html(plugin: PluginRecord) -> bytes:
    """The PEP 503 page of one project."""
    lines = [f"<h1>Links for {escape(plugin.distribution)}</h1>\n"]
    for record, yanked, requires_python in _files(plugin):
        attrs = f'href="{record.url}#sha256={record.sha256}"'
        if requires_python:
            attrs += f' data-requires-python="{escape(requires_python)}"'
        if record.core_metadata_sha256:
            meta = f"sha256={record.core_metadata_sha256}"
            attrs += f' data-dist-info-metadata="{meta}" data-core-metadata="{meta}"'
        if yanked is not None:
            attrs += f' data-yanked="{escape(yanked)}"'
        lines.append(f"<a {attrs}>{escape(record.filename)}</a><br>\n")
    return _html_page(f"Links for {plugin.distribution}", "".join(lines))


def project_json(plugin: PluginRecord) -> bytes:
    """The PEP 691 page of one project (API 1.1: PEP 700 fields)."""
    files = []
    for record, yanked, requires_python in _files(plugin):
        entry: dict[str, object] = {
            "filename": record.filename,
            "url": record.url,
            "hashes": {"sha256": record.sha256},
            "size": record.size,
            "upload-time": record.uploaded,
            "yanked": yanked if yanked else (yanked is not None),
        }
        if requires_python:
            entry["requires-python"] = requires_python
        meta: object = (
            {"sha256": record.core_metadata_sha256} if record.core_metadata_sha256 else False
        )
        entry["core-metadata"] = meta
        entry["dist-info-metadata"] = meta
        files.append(entry)
    return json.dumps(
        {
            "meta": {"api-version": API_VERSION},
            "name": plugin.distribution,
            "versions": [v.version for v in reversed(plugin.versions)],
            "files": files,
        },
        separators=(",", ":"),
    ).encode()
