"""The registry client: plugin versions, files and hashes from the registries' JSON API,
then from the built-in source (the official plugins shipped with p2phost)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from p2phost_sdk import HOST_API, host_api_compatible, normalize_name

from .._errors import UserError
from .._manifest import DEFAULT_REGISTRY, REGISTRY_URL_FORM, is_registry_url
from ._errors import IntegrityError, RegistryError, UnknownPlugin, Unreachable
from ._http import Fetcher, NotFound

if TYPE_CHECKING:
    from ._builtin import BuiltinSource


def registry_urls(option: str | None, manifest_registries: list[str]) -> list[str]:
    """The registries to ask, in order: ``--registry``, ``$P2PHOST_REGISTRY``, manifest, default."""
    return plugin_sources(option, manifest_registries) or [DEFAULT_REGISTRY]


def plugin_sources(option: str | None, manifest_registries: list[str]) -> list[str]:
    """The registries plugins come from, before the built-in source (none configured: [])."""
    for value, origin in ((option, "--registry"), (os.environ.get("P2PHOST_REGISTRY"),
                                                   "P2PHOST_REGISTRY")):
        if value:
            urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
            for url in urls:
                if not is_registry_url(url):  # else it would be "down", and skipped
                    raise UserError(f"{origin}: {url!r} is not a registry URL",
                                    fix=f"write it as {REGISTRY_URL_FORM} (or https://HOST)")
            return urls
    return list(manifest_registries)


def sources_origin(option: str | None) -> str:
    """Where :func:`plugin_sources` found the registries, as a user would change it."""
    if option:
        return "--registry"
    if os.environ.get("P2PHOST_REGISTRY"):
        return "P2PHOST_REGISTRY"
    return "[registry] url in p2phost.toml"


def _find_builtin() -> BuiltinSource | None:
    from ._builtin import BuiltinSource

    return BuiltinSource.find()


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
    #: What the release provides, e.g. ``{"schemes": ("tcp",)}`` for a transport.
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)
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
    """Asks the configured registries, in order, then the built-in source about plugins.

    Answers are memoised. A registry that does not answer is skipped for the plugins the
    built-in source has, and ``notify`` is told so once per registry, unless ``strict``
    (``--refresh``: the user asked for the registries' answers, so one missing is an error).
    ``origin`` says where the URLs were configured, for the fix.
    """

    def __init__(self, urls: list[str], fetcher: Fetcher | None = None, *,
                 builtin: BuiltinSource | bool | None = True,
                 notify: Callable[[str], None] | None = None, strict: bool = False,
                 origin: str = "[registry] url in p2phost.toml") -> None:
        self.urls = urls
        self.fetcher = fetcher or Fetcher.from_env()
        #: The built-in source (True: this p2phost's own, found when first needed).
        self._builtin = builtin
        self.notify = notify
        self.strict = strict
        self.origin = origin
        self._down: dict[str, str] = {}
        self._plugins: dict[str, PluginInfo] = {}

    @property
    def builtin(self) -> BuiltinSource | None:
        """The built-in source asked after the registries, if there is one."""
        if self._builtin is True:
            self._builtin = _find_builtin()
        return self._builtin or None

    @property
    def down(self) -> list[str]:
        """The registries that did not answer, whose plugins came from the built-in source."""
        return list(self._down)

    def plugin(self, name: str) -> PluginInfo:
        """Every release of ``name``; raises :class:`UnknownPlugin` when no source has it.

        A registry's releases come first; the built-in source adds versions it lacks, so a
        registry with a newer version wins and the built-in one remains for offline use.
        """
        norm = normalize_name(name)
        if norm in self._plugins:
            return self._plugins[norm]
        first_miss = ""
        builtin = self.builtin
        local, refused = None, None
        try:
            local = builtin.plugin(norm) if builtin is not None else None
        except IntegrityError as exc:  # a registry may still have it
            refused = exc
        for base in self.urls:
            if base in self._down and local is not None:
                continue
            try:
                data = self.fetcher.json(f"{base}/api/v1/plugins/{urllib.parse.quote(norm)}")
            except NotFound as exc:
                first_miss = first_miss or exc.message
                continue
            except Unreachable as exc:
                if self.strict:
                    raise RegistryError(f"a refresh must ask {base}, and it did not "
                                        f"answer: {exc.message}",
                                        fix=f"start that registry, or remove it from "
                                            f"{self.origin} (plugin install without "
                                            "--refresh takes the official plugins from the "
                                            "built-in source)") from None
                if local is None:
                    raise refused or self._typo(norm, exc) or exc from None
                self._skip(base, exc)
                continue
            info = _with_builtin(_parse_plugin(base, norm, data), local)
            self._plugins[norm] = info
            return info
        if local is not None:
            self._plugins[norm] = local
            return local
        if refused is not None:
            raise refused
        where = ", ".join([*self.urls, *(["the built-in source"] if builtin else [])])
        hint = first_miss.find("did you mean")
        fix = f"p2phost plugin search {name}"
        if not where:
            where = "no source: no registry is configured and this p2phost has no built-in " \
                    "source (a development install)"
            fix = "run scripts/dist and export P2PHOST_BUILTIN_DIR=dist/plugins, or name a " \
                  "registry with --registry URL"
        message = f"no plugin named {name!r} in {where}"
        if plugin := self._plugin_of_distribution(norm):
            # Registry pages and pip show the distribution, ``p2phost-<plugin>``.
            raise UnknownPlugin(f"{message}; {name} is the Python distribution of the plugin "
                                f"{plugin!r}", fix=f"p2phost plugin install {plugin}")
        if hint >= 0:
            message += f"; {first_miss[hint:]}"
        elif builtin is not None:
            # A registry says "did you mean" in its 404; the built-in source must too.
            from .._suggest import close_names, did_you_mean

            close = close_names(norm, builtin.wheels)
            message += did_you_mean(norm, close)
            if close:
                fix = f"p2phost plugin install {close[0]}"
        raise UnknownPlugin(message, fix=fix)

    def _typo(self, norm: str, exc: Unreachable) -> Unreachable | None:
        """``exc`` saying "did you mean" the built-in source's nearest names, if any: while
        a registry is down they are the names known here."""
        from .._suggest import close_names, did_you_mean

        close = close_names(norm, self.builtin.wheels) if self.builtin is not None else []
        if not close:
            return None
        return Unreachable(exc.message + did_you_mean(norm, close),
                           fix=f"p2phost plugin install {close[0]} (the built-in source has "
                               f"it), or {exc.fix}" if exc.fix else
                               f"p2phost plugin install {close[0]}")

    def _plugin_of_distribution(self, norm: str) -> str | None:
        """The plugin whose distribution is named ``norm`` (``p2phost-echo``: ``echo``)."""
        plugin = norm.removeprefix("p2phost-")
        if plugin == norm or not plugin:
            return None
        try:
            self.plugin(plugin)
        except (RegistryError, UnknownPlugin, IntegrityError):
            return None
        return plugin

    def _skip(self, base: str, exc: RegistryError) -> None:
        if base in self._down:
            return
        self._down[base] = exc.message
        if self.notify is not None:
            self.notify(f"warning: {base} did not answer; installing the plugins it would "
                        "have given from the built-in source (the official plugins shipped "
                        f"with p2phost)\nfix: start that registry, or remove it from "
                        f"{self.origin}")

    def search(self, query: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Search results from every registry (the first registry wins a duplicate name)."""
        params = {"q": query, "host_api": str(HOST_API)}
        if kind:
            params["kind"] = kind
        seen: dict[str, dict[str, Any]] = {}
        builtin = self.builtin
        for base in self.urls:
            data = self.fetcher.json(f"{base}/api/v1/plugins?{urllib.parse.urlencode(params)}")
            if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
                raise RegistryError(f"{base} answered a malformed search result",
                                    fix="check that --registry points at a p2phost registry")
            for row in data["plugins"]:
                if isinstance(row, dict) and "name" in row:
                    seen.setdefault(str(row["name"]), {**row, "source": base})
        for row in builtin.search(query, kind) if builtin is not None else ():
            seen.setdefault(str(row["name"]), row)
        return list(seen.values())


def _with_builtin(info: PluginInfo, local: PluginInfo | None) -> PluginInfo:
    """A registry's releases plus the built-in versions it does not have, newest first."""
    if local is None:
        return info
    have = {r.version for r in info.releases}
    extra = [r for r in local.releases if r.version not in have]
    if not extra:
        return info
    releases = sorted([*info.releases, *extra], key=lambda r: r.version, reverse=True)
    return PluginInfo(name=info.name, source=info.source, summary=info.summary,
                      owners=info.owners, downloads=info.downloads, releases=tuple(releases))


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
                provides={str(k): tuple(str(x) for x in v)
                          for k, v in (row.get("provides") or {}).items()
                          if isinstance(v, list)},
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
