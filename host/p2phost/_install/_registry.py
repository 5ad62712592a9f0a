"""The registry client: plugin versions, files and hashes from the registry's JSON API."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from p2phost_sdk import HOST_API, host_api_compatible, normalize_name

from .._manifest import DEFAULT_REGISTRY
from ._errors import RegistryError, UnknownPlugin
from ._http import Fetcher, NotFound


def registry_urls(option: str | None, manifest_registries: list[str]) -> list[str]:
    """The registries to ask, in order: ``--registry``, ``$P2PHOST_REGISTRY``, manifest, default."""
    for value in (option, os.environ.get("P2PHOST_REGISTRY")):
        if value:
            return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    return list(manifest_registries) or [DEFAULT_REGISTRY]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of a release."""

    filename: str
    url: str
    sha256: str
    size: int | None = None
    packagetype: str = "bdist_wheel"
    signature_url: str | None = None
    #: ``ed25519:BASE64`` of the key the registry says signed the file (None: unsigned).
    publisher_key: str | None = None


@dataclass(frozen=True)
class Release:
    """One version of a plugin, as a registry describes it."""

    name: str
    version: Version
    source: str
    kinds: tuple[str, ...] = ()
    host_api: str = ""
    requires: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    yanked: bool = False
    yanked_reason: str | None = None
    files: tuple[RemoteFile, ...] = ()

    @property
    def fits_host(self) -> bool:
        """Whether this host's HOST_API satisfies the release's ``host-api``."""
        return host_api_compatible(self.host_api)

    def wheel(self) -> RemoteFile | None:
        """The wheel this host can install, if the release has one."""
        from ._wheels import wheel_fits

        return next((f for f in self.files
                     if f.packagetype == "bdist_wheel" and wheel_fits(f.filename)), None)

    def unfit_reason(self) -> str | None:
        """Why this release cannot be installed on this host (yanks aside), or None."""
        if not self.fits_host:
            return f"{self.name} {self.version} needs host-api {self.host_api}, " \
                   f"this host is {HOST_API}"
        if self.wheel() is None:
            return f"{self.name} {self.version} has no wheel for this platform"
        return None


@dataclass(frozen=True)
class PluginInfo:
    """A plugin and all its releases (newest first), from the first registry that has it."""

    name: str
    source: str
    summary: str = ""
    owners: tuple[str, ...] = ()
    downloads: int = 0
    releases: tuple[Release, ...] = ()

    def newest_fitting(self) -> Release | None:
        """The newest release this host can install, ignoring version specifiers."""
        return next((r for r in self.releases if not r.yanked and r.unfit_reason() is None
                     and not r.version.is_prerelease), None)


class RegistryClient:
    """Asks the configured registries, in order, about plugins. Answers are memoised."""

    def __init__(self, urls: list[str], fetcher: Fetcher | None = None) -> None:
        self.urls = urls
        self.fetcher = fetcher or Fetcher.from_env()
        self._plugins: dict[str, PluginInfo] = {}

    def plugin(self, name: str) -> PluginInfo:
        """Every release of ``name``; raises :class:`UnknownPlugin` when no registry has it."""
        norm = normalize_name(name)
        if norm in self._plugins:
            return self._plugins[norm]
        first_miss = ""
        for base in self.urls:
            try:
                data = self.fetcher.json(f"{base}/api/v1/plugins/{urllib.parse.quote(norm)}")
            except NotFound as exc:
                first_miss = first_miss or exc.message
                continue
            info = _parse_plugin(base, norm, data)
            self._plugins[norm] = info
            return info
        where = ", ".join(self.urls)
        hint = first_miss.find("did you mean")
        raise UnknownPlugin(f"no plugin named {name!r} in {where}"
                            + (f"; {first_miss[hint:]}" if hint >= 0 else ""),
                            fix=f"p2phost plugin search {name}")

    def search(self, query: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Search results from every registry (the first registry wins a duplicate name)."""
        params = {"q": query, "host_api": str(HOST_API)}
        if kind:
            params["kind"] = kind
        seen: dict[str, dict[str, Any]] = {}
        for base in self.urls:
            data = self.fetcher.json(f"{base}/api/v1/plugins?{urllib.parse.urlencode(params)}")
            if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
                raise RegistryError(f"{base} answered a malformed search result",
                                    fix="check that --registry points at a p2phost registry")
            for row in data["plugins"]:
                if isinstance(row, dict) and "name" in row:
                    seen.setdefault(str(row["name"]), {**row, "source": base})
        return list(seen.values())


def _parse_plugin(base: str, name: str, data: Any) -> PluginInfo:
    try:
        releases = []
        for row in data["versions"]:
            try:
                version = Version(str(row["version"]))
            except InvalidVersion:
                continue  # a version this client cannot order is one it cannot pick
            files = tuple(RemoteFile(
                filename=str(f["filename"]),
                url=urllib.parse.urljoin(base + "/", str(f["url"])),
                sha256=str(f["sha256"]).lower(),
                size=f.get("size"),
                packagetype=str(f.get("packagetype", "bdist_wheel")),
                signature_url=f.get("signature_url"),
                publisher_key=f.get("publisher_key"),
            ) for f in row.get("files", []))
            releases.append(Release(
                name=name, version=version, source=base,
                kinds=tuple(row.get("kinds", ())), host_api=str(row.get("host_api", "")),
                requires={normalize_name(k): str(v) for k, v in row.get("requires", {}).items()},
                capabilities=tuple(row.get("capabilities", ())),
                yanked=bool(row.get("yanked", False)), yanked_reason=row.get("yanked_reason"),
                files=files,
            ))
        releases.sort(key=lambda r: r.version, reverse=True)
        return PluginInfo(name=name, source=base, summary=str(data.get("summary") or ""),
                          owners=tuple(str(o) for o in data.get("owners", ())),
                          downloads=int(data.get("downloads") or 0), releases=tuple(releases))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RegistryError(f"{base} answered malformed data for plugin {name!r} ({exc!r})",
                            fix="check that --registry points at a p2phost registry") from exc
