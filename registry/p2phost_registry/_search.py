"""Search over plugins: text, kind and host-api compatibility, with a few orderings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from p2phost_sdk import KINDS

from ._errors import BadRequest
from ._records import PluginRecord, VersionRecord

SORTS = ("relevance", "downloads", "newest", "name")


@dataclass(frozen=True)
class Hit:
    """A plugin that matched, with the version that made it match."""

    plugin: PluginRecord
    latest: VersionRecord


def search(
    plugins: Iterable[PluginRecord],
    q: str = "",
    kind: str = "",
    host_api: str = "",
    sort: str = "relevance",
) -> list[Hit]:
    """Plugins matching every given filter, ordered by ``sort``."""
    if kind and kind not in KINDS:
        raise BadRequest(f"kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if sort not in SORTS:
        raise BadRequest(f"sort {sort!r} is unknown; use one of {', '.join(SORTS)}")
    if host_api:
        try:
            Version(host_api)
        except InvalidVersion as exc:
            raise BadRequest(f"host_api {host_api!r} is not a version such as 1.0") from exc
    words = q.lower().split()
    scored: list[tuple[int, Hit]] = []
    for plugin in plugins:
        latest = plugin.latest(host_api or None)
        if latest is None or not latest.kinds or (kind and kind not in latest.kinds):
            continue
        score = 0
        for word in words:
            if word == plugin.name or word == plugin.display_name.lower():
                score += 100
            elif word in plugin.name:
                score += 10
            elif word in latest.summary.lower() or any(word in k for k in latest.kinds):
                score += 1
            else:
                score = -1
                break
        if score >= 0:
            scored.append((score, Hit(plugin, latest)))
    if sort == "downloads":
        scored.sort(key=lambda s: (-s[1].plugin.downloads, s[1].plugin.name))
    elif sort == "newest":
        scored.sort(key=lambda s: s[1].plugin.updated, reverse=True)
    elif sort == "name":
        scored.sort(key=lambda s: s[1].plugin.name)
    else:
        scored.sort(key=lambda s: (-s[0], -s[1].plugin.downloads, s[1].plugin.name))
    return [hit for _, hit in scored]
