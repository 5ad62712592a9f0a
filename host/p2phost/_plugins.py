"""The plugin manager: load exactly the plugins the manifest declares, and ask them for parts.

Plugins are found through entry points (group ``p2phost.plugins``) of the distributions
installed in the project's plugin environment first, then the host's own environment
(so a plugin under development can be ``pip install -e``'d). Each declared plugin is
checked against its version specifier and ``HOST_API``; the plugins it requires are
loaded with it, in dependency order. Problems are :class:`PluginLoadError` s that name
the command that fixes them.
"""

from __future__ import annotations

import functools
import graphlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

import pluggy
from packaging.version import InvalidVersion, Version

from p2phost_sdk import (
    ENTRY_POINT_GROUP,
    HOST_API,
    PLUGGY_PROJECT_NAME,
    App,
    Codec,
    Discovery,
    HookSpecs,
    Identity,
    PluginContext,
    PluginMetadata,
    PluginMetadataError,
    Security,
    Transport,
    host_api_compatible,
    normalize_name,
    parse_specifier,
    plugin_name_of,
    plugin_payload,
)

from ._errors import ManifestError, PluginLoadError, UserError
from ._project import Project
from ._suggest import close_names, did_you_mean
from ._toml_lines import find_line

log = logging.getLogger("p2phost.plugins")


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin that loaded: its metadata, validated config and where it came from."""

    metadata: PluginMetadata
    config: dict[str, Any]
    location: str
    #: Whether the manifest declares it (False: loaded because another plugin requires it).
    declared: bool = True


@dataclass
class NodeParts:
    """What the loaded plugins give a node."""

    transports: dict[str, Transport] = field(default_factory=dict)
    codecs: dict[str, Codec] = field(default_factory=dict)
    discovery: list[Discovery] = field(default_factory=list)
    security: list[Security] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)


def _signer(identity: Identity, plugin: str) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        return identity.sign(plugin_payload(plugin, data))
    return sign


def _install_fix(name: str, spec: str) -> str:
    return f"p2phost plugin install {name}" if spec.strip() in ("", "*") \
        else f"p2phost plugin install '{name}{spec}'"


class LoadedPlugins:
    """The plugins of one node, registered with pluggy in dependency order."""

    def __init__(self, manager: pluggy.PluginManager, plugins: list[LoadedPlugin],
                 state_dir: Path) -> None:
        self.manager = manager
        self.plugins = plugins
        self.state_dir = state_dir

    @property
    def hook(self) -> pluggy.HookRelay:
        """The pluggy hook relay, for lifecycle notifications (``hook.p2phost_peer_lost``)."""
        return self.manager.hook

    def _each(self, hook_name: str, peer_id: str, max_frame_size: int,
              identity: Identity | None = None) -> list[tuple[str, Any]]:
        """Call a factory hook once per plugin, with that plugin's own context."""
        results: list[tuple[str, Any]] = []
        for plugin in self.plugins:
            name = plugin.metadata.name
            own = self.manager.get_plugin(name)
            others = [p for p in self.manager.get_plugins() if p is not own]
            caller = self.manager.subset_hook_caller(hook_name, remove_plugins=others)
            context = PluginContext(
                name=name,
                config=plugin.config,
                peer_id=peer_id,
                state_dir=self.state_dir / "state" / name,
                max_frame_size=max_frame_size,
                logger=logging.getLogger(f"p2phost.plugin.{name}"),
                sign=None if identity is None else _signer(identity, name),
            )
            try:
                for made in caller(context=context):
                    results.extend((name, part) for part in made)
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {name!r} failed in {hook_name}: {type(exc).__name__}: {exc}",
                    fix=f"check [config.{name}] in p2phost.toml, or run with --debug",
                ) from exc
        return results

    def build(self, peer_id: str, max_frame_size: int,
              identity: Identity | None = None) -> NodeParts:
        """Ask every plugin for its transports, codecs, discovery, security and apps
        (with ``identity``, each plugin may sign with the node's key: PluginContext.sign)."""
        parts = NodeParts()
        each = functools.partial(self._each, peer_id=peer_id, max_frame_size=max_frame_size,
                                 identity=identity)
        for owner, transport in each("p2phost_transports"):
            for scheme in type(transport).schemes:
                if scheme in parts.transports:
                    raise PluginLoadError(
                        f"two transports serve {scheme}://: {owner!r} and another plugin",
                        fix="remove one of them from [plugins] in p2phost.toml",
                    )
                parts.transports[scheme] = transport
        for _, codec in each("p2phost_codecs"):
            parts.codecs.setdefault(type(codec).content_type, codec)
        parts.discovery = [d for _, d in each("p2phost_discovery")]
        parts.security = [s for _, s in each("p2phost_security")]
        parts.apps = [a for _, a in each("p2phost_apps")]
        return parts


class PluginManager:
    """Finds, checks and loads the plugins of one project."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.manifest = project.manifest

    def available(self) -> dict[str, Distribution]:
        """Plugin distributions by normalised name: the project's environment first."""
        found: dict[str, Distribution] = {}
        sources: list[Any] = [self.project.environment.distributions(), distributions()]
        for source in sources:
            for dist in source:
                if not any(ep.group == ENTRY_POINT_GROUP for ep in dist.entry_points):
                    continue
                found.setdefault(plugin_name_of(dist), dist)
        return found

    def _declared_line(self, name: str) -> str:
        line = find_line(self.manifest.text, "plugins", name,
                         lambda found, key: normalize_name(found) == key)
        return f"{self.manifest.path.name}:{line}"

    def resolve(self) -> tuple[list[tuple[str, Distribution, PluginMetadata, bool]],
                               list[UserError]]:
        """Every plugin to load (declared and required), in dependency order, and every problem."""
        available = self.available()
        problems: list[UserError] = []
        chosen: dict[str, tuple[Distribution, PluginMetadata, bool]] = {}
        wanted = [(name, spec, True, "") for name, spec in self.manifest.plugins.items()]
        while wanted:
            name, spec, declared, needed_by = wanted.pop(0)
            if name in chosen:
                problem = self._check_version(name, chosen[name][1].version, spec, needed_by)
                if problem:
                    problems.append(problem)
                continue
            dist = available.get(name)
            where = f"declared at {self._declared_line(name)}" if declared \
                else f"required by {needed_by!r}"
            if dist is None:
                # Only a near-certain typo: an uninstalled plugin is the common case.
                close = close_names(name, available, prefixes=False) if declared else []
                missing = PluginLoadError(
                    f"plugin {name!r} ({where}) is not installed"
                    + did_you_mean(name, close),
                    fix=f"rename {name} to {close[0]} at {self._declared_line(name)}, or "
                        f"{_install_fix(name, spec)}" if close else _install_fix(name, spec))
                missing.missing = name
                problems.append(missing)
                continue
            try:
                metadata = PluginMetadata.from_distribution(dist)
            except PluginMetadataError as exc:
                problems.append(PluginLoadError(
                    f"plugin {name!r} has invalid metadata: {exc}",
                    fix=f"p2phost plugin upgrade {name}, or tell its author"))
                continue
            problem = self._check_version(name, metadata.version, spec, needed_by)
            if problem is None and not host_api_compatible(metadata.host_api):
                problem = PluginLoadError(
                    f"plugin {name} {metadata.version} needs host-api {metadata.host_api}, "
                    f"this host is {HOST_API}",
                    fix=f"p2phost plugin install {name} (picks a version that fits this host)")
            if problem:
                problems.append(problem)
                continue
            chosen[name] = (dist, metadata, declared)
            wanted.extend((req, spec, False, name) for req, spec in metadata.requires.items())

        order = self._order({n: m for n, (_, m, _) in chosen.items()}, problems)
        return [(n, chosen[n][0], chosen[n][1], chosen[n][2]) for n in order], problems

    def _check_version(self, name: str, version: str, spec: str,
                       needed_by: str) -> PluginLoadError | None:
        try:
            ok = parse_specifier(spec).contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if ok:
            return None
        who = f"{needed_by!r} requires" if needed_by else "p2phost.toml declares"
        return PluginLoadError(f"{who} {name}{spec}, but {name} {version} is installed",
                               fix=_install_fix(name, spec))

    @staticmethod
    def _order(chosen: dict[str, PluginMetadata], problems: list[UserError]) -> list[str]:
        graph = {name: [r for r in meta.requires if r in chosen] for name, meta in chosen.items()}
        try:
            return list(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            problems.append(PluginLoadError(f"plugin dependency cycle: {cycle}",
                                            fix="remove one of these plugins from p2phost.toml"))
            return []

    def problems(self) -> list[UserError]:
        """Every problem loading would hit, without importing anything (for ``doctor``)."""
        resolved, problems = self.resolve()
        for name, _, metadata, _ in resolved:
            problems.extend(self._config_problems(name, metadata))
        return problems

    def _config_problems(self, name: str, metadata: PluginMetadata) -> list[ManifestError]:
        table = self.manifest.config.get(name, {})
        return [self.manifest.error(f"config.{name}", e.field,
                                    f"expected {e.expected}, got {e.got!r}",
                                    fix=f"see `p2phost plugin info {name}` for its settings")
                for e in metadata.config.problems(table, name)]

    def load(self) -> LoadedPlugins:
        """Import and register every plugin; raises the first problem found."""
        resolved, problems = self.resolve()
        if problems:
            raise problems[0]
        self.project.environment.activate()
        manager = pluggy.PluginManager(PLUGGY_PROJECT_NAME)
        manager.add_hookspecs(HookSpecs)
        loaded: list[LoadedPlugin] = []
        for name, dist, metadata, declared in resolved:
            config_problems = self._config_problems(name, metadata)
            if config_problems:
                raise config_problems[0]
            obj = self._import(name, dist)
            try:
                manager.register(obj, name=name)
            except pluggy.PluginValidationError as exc:
                raise PluginLoadError(f"plugin {name!r} has a bad hook: {exc}",
                                      fix=f"p2phost plugin upgrade {name}, or tell its author"
                                      ) from exc
            config = metadata.config.validate(self.manifest.config.get(name, {}), name)
            loaded.append(LoadedPlugin(metadata, config, str(dist.locate_file("")), declared))
        try:
            manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"a plugin implements an unknown hook: {exc}",
                                  fix="upgrade the plugin, or tell its author") from exc
        return LoadedPlugins(manager, loaded, self.project.state_dir)

    @staticmethod
    def _import(name: str, dist: Distribution) -> object:
        points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        point = next((ep for ep in points if normalize_name(ep.name) == name), points[0])
        try:
            return point.load()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {name!r} failed to import ({point.value}): {type(exc).__name__}: {exc}",
                fix=f"p2phost plugin upgrade {name}; run with --debug for the traceback",
            ) from exc


def describe(plugins: Sequence[LoadedPlugin], label: Callable[[LoadedPlugin], str] | None = None
             ) -> list[str]:
    """One line per loaded plugin: name, version, kinds (and why it was loaded)."""
    lines = []
    for p in plugins:
        why = "" if p.declared else "  (required by another plugin)"
        lines.append(f"{p.metadata.name} {p.metadata.version} [{', '.join(p.metadata.kinds)}]{why}")
    return lines
