"""``p2phost plugin ...``: install, upgrade, remove, sync and inspect this project's plugins.

The lifecycle commands' work is in :mod:`._lifecycle` (which the fast path of ``main``
calls without typer). Heavy modules (the installer, rich tables, pluggy) are imported
inside the commands that use them.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from .._errors import UserError
from .._project import Project
from . import _lifecycle
from ._app import command_group
from ._output import console
from .completion import plugin_names

plugin_app = command_group("Install, inspect and author plugins.", no_args_is_help=True)

_REGISTRY = typer.Option(None, "--registry", metavar="URL",
                         help="Ask this registry (several: comma-separated) instead of the "
                              "configured ones.")
_YES = typer.Option(False, "--yes", "-y", help="Do not ask before installing (for scripts).")
_REQUIRE_SIGNED = typer.Option(False, "--require-signed",
                               help="Refuse plugins not signed by a publisher key (also "
                                    "[registry] require-signed = true in p2phost.toml).")
_TRUST_NEW_KEY = typer.Option(False, "--trust-new-key",
                              help="Accept a plugin signed by another publisher key than the "
                                   "one p2phost.lock pins, and pin the new key.")
_JSON = typer.Option(False, "--json", help="Print the answer as JSON (shape: docs/cli.md).")
_NAMES_HELP = "Plugins to upgrade (none: all)."


@plugin_app.command("install")
def install(
    requests: list[str] = typer.Argument(None, metavar="NAME[SPEC]...",
                                         help="Plugins to add (none: everything declared)."),
    registry: str | None = _REGISTRY,
    yes: bool = _YES,
    require_signed: bool = _REQUIRE_SIGNED,
    trust_new_key: bool = _TRUST_NEW_KEY,
    refresh: bool = typer.Option(False, "--refresh",
                                 help="Ask the registries again even where their last answer "
                                      "is still fresh (they say for how long: 10 s for a "
                                      "p2phost registry)."),
) -> None:
    """Resolve, download, verify and install plugins; record them in p2phost.toml and the lock."""
    _lifecycle.install(requests or [], registry, yes, require_signed, trust_new_key, refresh)


@plugin_app.command("upgrade")
def upgrade(
    names: list[str] = typer.Argument(None, metavar="[NAME]...", help=_NAMES_HELP,
                                      autocompletion=plugin_names),
    latest: bool = typer.Option(False, "--latest",
                                help="Take the newest release even outside the range "
                                     "p2phost.toml allows, and record the new range."),
    registry: str | None = _REGISTRY,
    yes: bool = _YES,
    require_signed: bool = _REQUIRE_SIGNED,
    trust_new_key: bool = _TRUST_NEW_KEY,
) -> None:
    """Upgrade plugins to the newest versions p2phost.toml's specifiers allow."""
    _lifecycle.upgrade(names or [], latest, registry, yes, require_signed, trust_new_key)


@plugin_app.command("remove")
def remove(
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Plugins to remove.",
                                      autocompletion=plugin_names),
    force: bool = typer.Option(False, "--force",
                               help="Remove even if another declared plugin requires it, or "
                                    "[node] listen/connect needs its transport."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before removing (for "
                             "scripts)."),
) -> None:
    """Remove plugins from p2phost.toml, the lock and the plugin environment."""
    _lifecycle.remove(names, force, yes)


@plugin_app.command("sync")
def sync(
    offline: bool = typer.Option(False, "--offline",
                                 help="Install from the download cache only."),
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """Make the plugin environment match p2phost.lock exactly (signatures checked)."""
    _lifecycle.sync(offline, require_signed)


@plugin_app.command("outdated")
def outdated(registry: str | None = _REGISTRY, as_json: bool = _JSON) -> None:
    """Installed plugins with newer versions: within the manifest's specifier, and at all."""
    from rich.table import Table

    # Looking for newer releases: every kept registry answer is revalidated (304s).
    with _lifecycle.installer(registry, refresh=True) as installer:
        rows = installer.outdated()
        locked = bool(installer.lock.plugins)
    if as_json:
        print(json.dumps({"outdated": [dict(zip(("name", "installed", "wanted", "latest"), row,
                                                strict=True)) for row in rows]}))
        return
    if not locked:  # not "up to date": there is nothing to compare
        console.print("no plugin is installed yet: run "
                      "`p2phost plugin install`", markup=False)
        return
    if not rows:
        console.print("all plugins are up to date")
        return
    table = Table("name", "installed", "wanted", "latest", box=None)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@plugin_app.command("list")
def list_plugins(as_json: bool = _JSON) -> None:
    """Installed plugins: name, version, kind, source, enabled."""
    from rich.table import Table

    from p2phost_sdk import PluginMetadata

    from .._lock import Lock
    from .._plugins import PluginManager

    project = Project.find()
    lock = Lock.load(project.lock_path)
    declared = project.manifest.plugins
    rows: list[dict[str, Any]] = []
    for name, dist in sorted(PluginManager(project).available().items()):
        locked = lock.plugin(name)
        try:
            kinds: list[str] | None = list(PluginMetadata.from_distribution(dist).kinds)
        except UserError:
            kinds = None
        source = locked.source if locked else str(dist.locate_file("")).rstrip("/")
        rows.append({"name": name, "version": dist.version, "kinds": kinds, "source": source,
                     "declared": name in declared})
    if as_json:
        print(json.dumps({"plugins": rows}))
        return
    table = Table("name", "version", "kind", "source", "enabled", box=None)
    for row in rows:
        kinds_text = "(invalid metadata)" if row["kinds"] is None else ", ".join(row["kinds"])
        table.add_row(str(row["name"]), str(row["version"]), kinds_text, str(row["source"]),
                      "yes" if row["declared"] else "no")
    console.print(table)


@plugin_app.command("info")
def info(name: str = typer.Argument(..., help="The plugin's name.",
                                   autocompletion=plugin_names),
         registry: str | None = _REGISTRY, as_json: bool = _JSON) -> None:
    """What a plugin is, provides, requires and may do (from the registry if not installed)."""
    from p2phost_sdk import PluginMetadata, host_api_compatible, normalize_name

    from .._lock import Lock
    from .._plugins import PluginManager

    project = Project.find()
    dist = PluginManager(project).available().get(normalize_name(name))
    if dist is None or registry:
        _remote_info(project, name, registry, as_json)
        return
    meta = PluginMetadata.from_distribution(dist)
    if as_json:
        print(json.dumps({
            "name": meta.name, "version": meta.version, "summary": meta.summary,
            "installed": True, "kinds": list(meta.kinds), "host_api": meta.host_api,
            "compatible": host_api_compatible(meta.host_api),
            "provides": {k: list(v) for k, v in meta.provides.items()},
            "requires": dict(meta.requires), "capabilities": list(meta.capabilities),
            "config": [{"name": f.name, "type": f.type, "default": f.default,
                        "description": f.description} for f in meta.config.fields],
            "location": str(dist.locate_file("")),
        }, default=str))
        return
    compatible = "yes" if host_api_compatible(meta.host_api) else "NO"
    console.print(f"{meta.name} {meta.version}" + (f": {meta.summary}" if meta.summary else ""),
                  markup=False)
    console.print(f"  kinds:        {', '.join(meta.kinds)}")
    console.print(f"  host-api:     {meta.host_api} (compatible with this host: {compatible})")
    for key, values in meta.provides.items():
        console.print(f"  provides:     {key} = {', '.join(values)}", markup=False)
    for req, spec in meta.requires.items():
        console.print(f"  requires:     {req} {spec}")
    console.print(f"  capabilities: {', '.join(meta.capabilities) or 'none'}")
    for field in meta.config.fields:
        default = "" if field.default is None else f" = {field.default!r}"
        console.print(f"  config:       {field.name}: {field.type}{default}  {field.description}",
                      markup=False)
    console.print(f"  distribution: {dist.metadata['Name']}")
    locked = Lock.load(project.lock_path).plugin(meta.name)
    if locked is not None:
        console.print(f"  source:       {locked.source}  ({locked.filename})", markup=False)
    console.print(f"  location:     {dist.locate_file('')}")


def _remote_info(project: Project, name: str, registry: str | None,
                 as_json: bool = False) -> None:
    from .._install import RegistryClient, RegistryError, UnknownPlugin, plugin_sources

    client = RegistryClient(plugin_sources(registry, project.manifest.registries))
    try:
        plugin = client.plugin(name)
    except (RegistryError, UnknownPlugin) as exc:
        # Never suggest installing the name asked for: no source has it. A close name
        # ("did you mean") is what to look at instead.
        fix = exc.fix or f"p2phost plugin search {name}"
        if fix.startswith("p2phost plugin install "):
            fix = fix.replace("p2phost plugin install ", "p2phost plugin info ", 1)
        raise UserError(f"plugin {name!r} is not installed in this project, and {exc.message}",
                        fix=fix) from exc
    newest = plugin.newest_fitting()
    if as_json:
        print(json.dumps({
            "name": plugin.name, "summary": plugin.summary, "installed": False,
            "registry": plugin.source, "owners": list(plugin.owners),
            "downloads": plugin.downloads,
            "newest": None if newest is None else {
                "version": str(newest.version), "kinds": list(newest.kinds),
                "host_api": newest.host_api, "requires": dict(newest.requires),
                "capabilities": list(newest.capabilities),
                "provides": {k: list(v) for k, v in newest.provides.items()}},
            "releases": [{"version": str(r.version), "yanked": r.yanked,
                          "yanked_reason": r.yanked_reason, "unfit": r.unfit_reason()}
                         for r in plugin.releases],
        }))
        return
    console.print(f"{plugin.name}" + (f": {plugin.summary}" if plugin.summary else "")
                  + "  (not installed)", markup=False)
    console.print(f"  source:       {plugin.source}")
    console.print(f"  publisher:    {', '.join(plugin.owners) or 'unknown'}")
    console.print(f"  downloads:    {plugin.downloads}")
    if newest is None:
        console.print("  no version fits this host")
    else:
        console.print(f"  newest that fits this host: {newest.version}")
        console.print(f"  kinds:        {', '.join(newest.kinds)}")
        console.print(f"  host-api:     {newest.host_api}")
        for req, spec in newest.requires.items():
            console.print(f"  requires:     {req} {spec}")
        console.print(f"  capabilities: {', '.join(newest.capabilities) or 'none'}")
        console.print(f"  install:      p2phost plugin install {plugin.name}")
    for release in plugin.releases:
        notes = [n for n in (release.unfit_reason(),
                             f"yanked: {release.yanked_reason or 'no reason given'}"
                             if release.yanked else None) if n]
        console.print(f"  version {release.version}" + (f"  ({'; '.join(notes)})" if notes
                                                         else ""), markup=False)


@plugin_app.command("search")
def search(query: str = typer.Argument("", help="Text to look for in names and summaries."),
           kind: str | None = typer.Option(None, "--kind", help="Only plugins of this kind."),
           registry: str | None = _REGISTRY, as_json: bool = _JSON) -> None:
    """Find plugins that fit this host in the registries."""
    from rich.table import Table

    from p2phost_sdk import KINDS

    from .._install import RegistryClient, plugin_sources

    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind {kind!r} is not a plugin kind", fix=f"use one of {KINDS}")
    try:
        registries = Project.find().manifest.registries
    except UserError:
        registries = []  # searching needs no project
    rows = RegistryClient(plugin_sources(registry, registries)).search(query, kind)
    if as_json:
        print(json.dumps({"plugins": [
            {"name": str(r["name"]), "latest": r.get("latest"), "kinds": r.get("kinds", []),
             "summary": r.get("summary", ""), "source": r.get("source")} for r in rows]}))
        return
    if not rows:
        console.print(f"no plugin matches {query!r}" + (f" of kind {kind}" if kind else ""))
        return
    table = Table("name", "latest", "kinds", "summary", box=None)
    for row in rows:
        table.add_row(str(row["name"]), str(row.get("latest", "")),
                      ", ".join(row.get("kinds", [])), str(row.get("summary", "")))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``plugin`` group."""
    app.add_typer(plugin_app, name="plugin")
