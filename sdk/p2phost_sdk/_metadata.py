"""Plugin metadata: what a plugin is, what it needs and what it provides.

The source of truth is the plugin project's ``pyproject.toml``: ``[project]`` gives the
distribution name and version, ``[tool.p2phost.plugin]`` the rest. The plugin's own name is
its entry point's in ``[project.entry-points."p2phost.plugins"]``, as pytest and Datasette
plugins are named: the distribution ``p2phost-tcp-transport`` is the plugin ``tcp-transport``
(a project without that entry point is a plugin named like its distribution). Wheels carry
that file in their ``.dist-info`` (hatchling's ``extra-metadata``), so the registry and the
host read the same table from a project, a wheel or an installed distribution.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ._config import ConfigSchema
from ._errors import PluginMetadataError
from ._names import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from importlib.metadata import Distribution

#: The plugin kinds.
KINDS = ("transport", "discovery", "codec", "security", "app")
#: What a plugin may declare it does, shown to the user at install.
CAPABILITIES = ("listen", "connect", "filesystem", "subprocess", "network")
#: Where a wheel's ``.dist-info`` carries the plugin's pyproject (first match wins).
METADATA_FILES = ("extra_metadata/p2phost-plugin.toml", "p2phost-plugin.toml")

_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def normalize_name(name: str) -> str:
    """The PEP 503 normal form of a project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a valid Python project (and so plugin) name."""
    return bool(_NAME_RE.match(name))


def plugin_name_of(dist: Distribution) -> str:
    """The plugin name of an installed distribution (its normalised name if not a plugin)."""
    names = sorted({ep.name for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP})
    return normalize_name(names[0] if len(names) == 1 else dist.metadata["Name"])


def _entry_point_name(data: Mapping[str, Any]) -> str | None:
    project = data.get("project")
    groups = project.get("entry-points") if isinstance(project, Mapping) else None
    group = groups.get(ENTRY_POINT_GROUP) if isinstance(groups, Mapping) else None
    if isinstance(group, Mapping) and len(group) == 1:
        return str(next(iter(group)))
    return None


def parse_specifier(text: str) -> SpecifierSet:
    """A PEP 440 specifier; ``"*"`` and ``""`` mean any version. Raises InvalidSpecifier."""
    text = text.strip()
    return SpecifierSet("" if text == "*" else text)


@dataclass(frozen=True)
class PluginMetadata:
    """Everything the host, the installer and the registry know about one plugin version."""

    name: str
    version: str
    kinds: tuple[str, ...]
    host_api: str
    summary: str = ""
    provides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    requires: Mapping[str, str] = field(default_factory=dict)
    config: ConfigSchema = field(default_factory=ConfigSchema)
    capabilities: tuple[str, ...] = ()
    #: The normalised distribution name (``p2phost-tcp-transport``); "" means ``name``.
    distribution: str = ""

    @property
    def dist_name(self) -> str:
        """The distribution that carries this plugin (pip and uv install it by this name)."""
        return self.distribution or self.name

    @classmethod
    def from_table(
        cls, name: str, version: str, table: Mapping[str, Any], *, source: str, summary: str = "",
        distribution: str = "",
    ) -> PluginMetadata:
        """Build and validate; raises :class:`PluginMetadataError` listing every problem.

        ``name`` is the plugin's name, ``distribution`` the project's when it differs.
        """
        problems: list[str] = []
        if not is_valid_name(name):
            problems.append(f"name: {name!r} is not a valid project name")
        if distribution and distribution != name and not is_valid_name(distribution):
            problems.append(f"name: {distribution!r} is not a valid project name")
        try:
            Version(version)
        except InvalidVersion:
            problems.append(f"version: {version!r} is not a PEP 440 version")
        known = {"kinds", "host-api", "provides", "requires", "config", "capabilities"}
        for key in table:
            if key not in known:
                problems.append(f"unknown key {key!r} (known: {', '.join(sorted(known))})")

        kinds = table.get("kinds")
        if isinstance(kinds, str):
            kinds = [kinds]
        if not kinds or not isinstance(kinds, list):
            problems.append(f"kinds: expected a list of {', '.join(KINDS)}")
            kinds = []
        for kind in kinds:
            if kind not in KINDS:
                problems.append(f"kinds: unknown kind {kind!r} (known: {', '.join(KINDS)})")

        host_api = table.get("host-api")
        if not isinstance(host_api, str) or not host_api.strip():
            problems.append('host-api: expected a PEP 440 specifier such as ">=1.0,<2"')
            host_api = ""
        else:
            try:
                SpecifierSet(host_api)
            except InvalidSpecifier:
                problems.append(f"host-api: {host_api!r} is not a PEP 440 specifier")

        provides: dict[str, tuple[str, ...]] = {}
        raw_provides = table.get("provides", {})
        if not isinstance(raw_provides, Mapping):
            problems.append("provides: expected a table of lists")
        else:
            for key, values in raw_provides.items():
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    problems.append(f"provides.{key}: expected a list of strings")
                else:
                    provides[key] = tuple(values)

        requires: dict[str, str] = {}
        raw_requires = table.get("requires", {})
        if not isinstance(raw_requires, Mapping):
            problems.append('requires: expected a table such as { json-codec = ">=1.0" }')
        else:
            for req, spec in raw_requires.items():
                if not is_valid_name(req):
                    problems.append(f"requires: {req!r} is not a valid plugin name")
                try:
                    parse_specifier(str(spec))
                except InvalidSpecifier:
                    problems.append(f"requires.{req}: {spec!r} is not a PEP 440 specifier")
                requires[normalize_name(req)] = str(spec)

        capabilities = table.get("capabilities", [])
        if not isinstance(capabilities, list):
            problems.append("capabilities: expected a list")
            capabilities = []
        for cap in capabilities:
            if cap not in CAPABILITIES:
                problems.append(
                    f"capabilities: unknown {cap!r} (known: {', '.join(CAPABILITIES)})"
                )

        config = ConfigSchema()
        try:
            config = ConfigSchema.from_table(table.get("config", {}))
        except (ValueError, AttributeError) as exc:
            problems.append(str(exc))

        if problems:
            raise PluginMetadataError(source, problems)
        return cls(
            name=normalize_name(name),
            version=version,
            kinds=tuple(kinds),
            host_api=host_api,
            summary=summary,
            provides=provides,
            requires=requires,
            config=config,
            capabilities=tuple(capabilities),
            distribution=(normalize_name(distribution)
                          if distribution and normalize_name(distribution) != normalize_name(name)
                          else ""),
        )

    @classmethod
    def from_pyproject(cls, path: Path) -> PluginMetadata:
        """Read a plugin project's ``pyproject.toml`` (or the directory holding it)."""
        if path.is_dir():
            path = path / "pyproject.toml"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PluginMetadataError(str(path), [str(exc)]) from exc
        project = data.get("project", {})
        return cls._from_pyproject_data(
            data, str(project.get("name", "")), str(project.get("version", "")), str(path),
            str(project.get("description", "")),
        )

    @classmethod
    def _from_pyproject_data(
        cls, data: Mapping[str, Any], name: str, version: str, source: str, summary: str
    ) -> PluginMetadata:
        table = data.get("tool", {}).get("p2phost", {}).get("plugin")
        if table is None:
            table = data  # a bare metadata table is accepted too
        if not isinstance(table, Mapping) or "kinds" not in table:
            raise PluginMetadataError(source, ["no [tool.p2phost.plugin] table"])
        plugin = _entry_point_name(data) or name
        return cls.from_table(plugin, version, table, source=source, summary=summary,
                              distribution=name)

    @classmethod
    def from_distribution(cls, dist: Distribution) -> PluginMetadata:
        """Read an installed distribution's plugin metadata."""
        meta = dist.metadata
        name, version = meta["Name"], meta["Version"]
        for rel in METADATA_FILES:
            text = dist.read_text(rel)
            if text is not None:
                return cls._parse_carried(text, name, version, f"{name} {version}",
                                          meta["Summary"] or "")
        raise PluginMetadataError(
            f"{name} {version}", ["the distribution carries no p2phost-plugin.toml"]
        )

    @classmethod
    def from_wheel(cls, path: Path) -> PluginMetadata:
        """Read a wheel file's plugin metadata without installing it."""
        import zipfile

        try:
            with zipfile.ZipFile(path) as wheel:
                names = set(wheel.namelist())
                dist_infos = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
                dist_infos = {d for d in dist_infos if d.endswith(".dist-info")}
                if len(dist_infos) != 1:
                    raise PluginMetadataError(path.name, ["expected exactly one .dist-info"])
                info = dist_infos.pop()
                metadata = wheel.read(f"{info}/METADATA").decode()
                name, version, summary = (next(iter(header_values(metadata, key)), None)
                                          for key in ("Name", "Version", "Summary"))
                for rel in METADATA_FILES:
                    if f"{info}/{rel}" in names:
                        text = wheel.read(f"{info}/{rel}").decode("utf-8")
                        return cls._parse_carried(
                            text, name, version, path.name, summary or "",  # type: ignore[arg-type]
                        )
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
            raise PluginMetadataError(path.name, [f"not a readable wheel: {exc}"]) from exc
        raise PluginMetadataError(path.name, ["the wheel carries no p2phost-plugin.toml"])

    @classmethod
    def from_toml(
        cls, text: str, name: str, version: str, *, source: str, summary: str = ""
    ) -> PluginMetadata:
        """Read a plugin's pyproject text; ``name`` and ``version`` are its distribution's."""
        return cls._parse_carried(text, name, version, source, summary)

    @classmethod
    def _parse_carried(
        cls, text: str, name: str, version: str, source: str, summary: str
    ) -> PluginMetadata:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PluginMetadataError(source, [f"p2phost-plugin.toml: {exc}"]) from exc
        return cls._from_pyproject_data(data, name, version, source, summary)

    def to_table(self) -> dict[str, Any]:
        """The ``[tool.p2phost.plugin]`` table (JSON-ready), as the registry serves it."""
        return {
            "kinds": list(self.kinds),
            "host-api": self.host_api,
            "provides": {k: list(v) for k, v in self.provides.items()},
            "requires": dict(self.requires),
            "config": self.config.to_table(),
            "capabilities": list(self.capabilities),
        }


def header_values(text: str, name: str) -> tuple[str, ...]:
    """Every value of the header ``name`` in core metadata (RFC 822 style headers, ending at
    the first empty line; a line starting with whitespace continues the one before).

    What ``email.parser.HeaderParser`` reads, without importing the email package (with
    socket, calendar and locale: more than the rest of reading a wheel costs); the host's
    installer reads ``Requires-Dist`` with it too.
    """
    wanted, values, current = name.lower(), [], None
    for line in text.splitlines():
        if not line.strip():
            break
        if line[0] in " \t":
            if current is not None:
                values[current] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        current = None
        if colon and key.strip().lower() == wanted:
            values.append(value.strip())
            current = len(values) - 1
    return tuple(values)
