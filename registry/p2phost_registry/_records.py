"""The store's records: plain frozen dataclasses that the API, the index and the pages render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from p2phost_sdk import host_api_compatible

from ._distributions import distribution_of


@dataclass(frozen=True)
class Actor:
    """Who is acting: a token's owner and the plugin names it is limited to (empty: any)."""

    owner: str
    scopes: tuple[str, ...] = ()

    def may_touch(self, name: str) -> bool:
        """Whether the token's scope covers plugin ``name`` (normalised)."""
        return not self.scopes or name in self.scopes


@dataclass(frozen=True)
class FileRecord:
    """One stored distribution file."""

    filename: str
    plugin: str
    version: str
    packagetype: str
    sha256: str
    size: int
    uploaded: str
    core_metadata_sha256: str | None
    has_signature: bool
    #: The ``ed25519:BASE64`` key whose p2phost signature the file carries (None: unsigned,
    #: or a foreign signature such as GPG that the registry stores but cannot check).
    publisher_key: str | None = None

    @property
    def url(self) -> str:
        """The file's path on the registry."""
        return f"/files/{self.plugin}/{self.filename}"


@dataclass(frozen=True)
class VersionRecord:
    """One release of a plugin; ``metadata`` is the plugin table (kinds, host-api, ...)."""

    plugin: str
    version: str
    summary: str
    metadata: dict[str, Any]
    yanked: bool
    yanked_reason: str | None
    uploaded: str
    requires_python: str | None
    files: tuple[FileRecord, ...] = ()
    readme: str = ""
    readme_type: str = "text/plain"
    downloads: int = 0
    license: str | None = None
    #: (label, URL) pairs: the home page and the Project-URLs of the metadata.
    urls: tuple[tuple[str, str], ...] = ()

    @property
    def kinds(self) -> list[str]:
        """The plugin kinds this version declares."""
        return list(self.metadata.get("kinds", []))

    @property
    def host_api(self) -> str:
        """The host-api specifier this version declares."""
        return str(self.metadata.get("host-api", ""))


@dataclass(frozen=True)
class PluginRecord:
    """A plugin with its owners and every version, newest first."""

    name: str
    display_name: str
    created: str
    downloads: int
    owners: tuple[str, ...]
    versions: tuple[VersionRecord, ...] = field(default_factory=tuple)

    def version(self, wanted: str) -> VersionRecord | None:
        """The version PEP 440-equal to ``wanted`` (``1.0`` finds ``1.0.0``), if any."""
        try:
            target = Version(wanted)
        except InvalidVersion:
            return None
        for version in self.versions:
            try:
                if Version(version.version) == target:
                    return version
            except InvalidVersion:
                continue
        return None

    def latest(self, host_api: str | None = None) -> VersionRecord | None:
        """The newest unyanked version (compatible with ``host_api`` when given).

        With every version yanked and no ``host_api``, the newest yanked one stands in.
        """
        wanted: Version | None = None
        if host_api is not None:
            try:
                wanted = Version(host_api)
            except InvalidVersion:
                return None
        for version in self.versions:
            if version.yanked:
                continue
            if wanted is None or host_api_compatible(version.host_api, wanted):
                return version
        if wanted is None and self.versions:
            return self.versions[0]
        return None

    @property
    def distribution(self) -> str:
        """The distribution carrying this plugin (pip and uv install it by this name)."""
        files = [f for v in self.versions for f in v.files]
        return (distribution_of(files[0].filename) if files else None) or self.name

    @property
    def summary(self) -> str:
        """The latest version's one-line summary."""
        latest = self.latest()
        return latest.summary if latest else ""

    @property
    def updated(self) -> str:
        """When a file was last uploaded."""
        return max((v.uploaded for v in self.versions), default=self.created)


@dataclass(frozen=True)
class PublishResult:
    """What a successful upload stored."""

    name: str
    version: str
    filename: str
    created_plugin: bool


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log."""

    at: str
    actor: str
    action: str
    plugin: str
    version: str | None
    detail: str
