"""``p2phost plugin ...``: install, upgrade, remove, sync and inspect this project's plugins.

Heavy modules (the installer, rich tables and progress bars, pluggy) are imported inside
the commands that use them: every ``p2phost`` invocation imports this module.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from .._errors import UserError
from .._project import Project
from ._output import console, err_console
from .completion import plugin_names

if TYPE_CHECKING:
    from .._install import Change, Installer, SigningPolicy

plugin_app = typer.Typer(help="Install, inspect and author plugins.", no_args_is_help=True)

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
_REQUEST = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def _parse_request(text: str) -> tuple[str, str]:
    """``NAME[SPEC]`` -> (name, spec); spec "" when none was given."""
    from packaging.specifiers import InvalidSpecifier

    from p2phost_sdk import is_valid_name, parse_specifier

    match = _REQUEST.match(text)
    if match is None or not is_valid_name(match.group(1)):
        raise UserError(f"{text!r} is not a plugin name", fix="p2phost plugin search TEXT")
    name, spec = match.groups()
    try:
        parse_specifier(spec)
    except InvalidSpecifier:
        raise UserError(f"{text!r}: {spec!r} is not a PEP 440 version specifier",
                        fix=f"p2phost plugin install '{name}>=1.0,<2'") from None
    return name, spec


@contextmanager
def _installer(registry: str | None, *, require_signed: bool = False,
               trust_new_key: bool = False, command: str = "") -> Iterator[Installer]:
    """An installer for the project here, with a progress bar on a terminal.

    Its warnings (unsigned plugins) are printed when the block ends without an error.
    """
    from .._install import SigningPolicy, plugin_sources

    project = Project.find()
    urls = plugin_sources(registry, project.manifest.registries)
    signing = SigningPolicy(require_signed or project.manifest.require_signed, trust_new_key,
                            command or "p2phost plugin install")
    with _installer_for(project, urls, signing) as installer:
        yield installer
    for warning in installer.warnings:
        err_console.print(warning)


@contextmanager
def _installer_for(project: Project, urls: list[str], signing: SigningPolicy,
                   ) -> Iterator[Installer]:
    from .._install import Installer

    if not console.is_terminal:
        def announce(label: str, total: int | None) -> Callable[[int], None]:
            size = f" ({total / 1024:.0f} KiB)" if total else ""
            console.print(f"downloading {label}{size}")
            return lambda n: None
        yield Installer(project, urls, progress=announce, signing=signing)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, transient=True) as bar:
        def start(label: str, total: int | None) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)
        yield Installer(project, urls, progress=start, signing=signing)


def _show_and_confirm(changes: Sequence[Change], yes: bool) -> None:
    """Print what changes, with each new release's publisher and capabilities; ask once."""
    for change in changes:
        line = change.describe()
        if change.release is not None:
            kinds = ", ".join(change.release.kinds)
            owners = ", ".join(change.info.owners) if change.info else ""
            caps = ", ".join(change.release.capabilities) or "none"
            line += f"  [{kinds}]  publisher: {owners or 'unknown'}  capabilities: {caps}"
            wheel = change.release.wheel()
            line += f"  signed by: {wheel.publisher_key}" if wheel and wheel.publisher_key \
                else "  unsigned"
        console.print(line, markup=False)
    if yes or not any(c.release is not None for c in changes):
        return
    _confirm("Install these plugins?", yes)


def _confirm(question: str, yes: bool, doing: str = "installing") -> None:
    """Ask ``question`` on a terminal; without one, only ``--yes`` goes ahead."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{doing} plugins needs a confirmation, and there is no terminal to "
                        "ask on", fix="re-run with --yes")
    if not typer.confirm(question, default=True):
        raise typer.Exit(1)


def _refuse_if_addresses_break(project: Project, removing: Sequence[str]) -> None:
    """Refuse to remove the transport that a ``[node]`` listen/connect address needs."""
    from .._plugins import PluginManager
    from .._schemes import scheme_of, served_by

    resolved, _ = PluginManager(project).resolve()
    served = served_by(m for _, _, m, _ in resolved)
    node = project.manifest.node
    for key, addresses in (("listen", node.listen), ("connect", node.connect)):
        for address in addresses:
            owner = served.get(scheme_of(address))
            if owner in removing:
                raise UserError(f"cannot remove {owner}: [node] {key} has {address!r}, and "
                                f"{owner} is the transport that serves it",
                                fix=f"change [node] {key} in p2phost.toml first, or "
                                    f"p2phost plugin remove --force {owner}")


def _summary(changes: Sequence[Change], verb: str, what: str = "plugin(s)") -> None:
    if not changes:
        console.print("nothing to do: the plugins already match")
        return
    console.print(f"{verb} {len(changes)} {what}: "
                  + ", ".join(f"{c.name} {c.new or c.old}" for c in changes), markup=False)


@plugin_app.command("install")
def install(
    requests: list[str] = typer.Argument(None, metavar="NAME[SPEC]...",
                                         help="Plugins to add (none: everything declared)."),
    registry: str | None = _REGISTRY,
    yes: bool = _YES,
    require_signed: bool = _REQUIRE_SIGNED,
    trust_new_key: bool = _TRUST_NEW_KEY,
) -> None:
    """Resolve, download, verify and install plugins; record them in p2phost.toml and the lock."""
    wanted = dict(_parse_request(r) for r in requests or [])
    command = shlex.join(["p2phost", "plugin", "install", *(requests or [])])
    with _installer(registry, require_signed=require_signed, trust_new_key=trust_new_key,
                    command=command) as installer:
        plan = installer.plan_install(wanted)
        _show_and_confirm(plan.changes, yes)
        installer.apply(plan)
    _summary(plan.changes, "installed")


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
    command = shlex.join(["p2phost", "plugin", "upgrade", *(["--latest"] if latest else []),
                          *(names or [])])
    with _installer(registry, require_signed=require_signed, trust_new_key=trust_new_key,
                    command=command) as installer:
        plan = installer.plan_upgrade(names or [], latest=latest)
        _show_and_confirm(plan.changes, yes)
        installer.apply(plan)
        beyond = [] if latest else [r for r in installer.outdated()
                                    if r[3] != r[2] and (not names or r[0] in names)]
    _summary(plan.changes, "upgraded")
    for name, _, wanted, newest in beyond:
        console.print(f"{name} {newest} is out of the range p2phost.toml allows (newest "
                      f"within it: {wanted}); take it with: p2phost plugin upgrade --latest "
                      f"{name}", markup=False)


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
    with _installer(None) as installer:
        plan = installer.plan_remove(names, force=force)
        if not force:
            _refuse_if_addresses_break(installer.project, plan.undeclare)
        for change in plan.changes:
            console.print(change.describe(), markup=False)
        _confirm("Remove these plugins?", yes, "removing")
        installer.apply(plan)
    console.print(f"removed {', '.join(plan.undeclare)}")


@plugin_app.command("sync")
def sync(
    offline: bool = typer.Option(False, "--offline",
                                 help="Install from the download cache only."),
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """Make the plugin environment match p2phost.lock exactly (signatures checked)."""
    with _installer(None, require_signed=require_signed) as installer:
        changes = installer.sync(offline=offline)
        missing = [n for n in installer.project.manifest.plugins
                   if installer.lock.plugin(n) is None]
    for path, size in installer.removed_leftovers:
        console.print(f"removed {path} ({size / 2**20:.1f} MiB), left by an interrupted "
                      "install", markup=False)
    for change in changes:
        console.print(change.describe(), markup=False)
    _summary(changes, "synced", "distribution(s)")
    if missing:
        console.print(f"warning: p2phost.toml declares {', '.join(missing)}, which "
                      "p2phost.lock does not have: run `p2phost plugin install`")


@plugin_app.command("outdated")
def outdated(registry: str | None = _REGISTRY, as_json: bool = _JSON) -> None:
    """Installed plugins with newer versions: within the manifest's specifier, and at all."""
    from rich.table import Table

    with _installer(registry) as installer:
        rows = installer.outdated()
    if as_json:
        print(json.dumps({"outdated": [dict(zip(("name", "installed", "wanted", "latest"), row,
                                                strict=True)) for row in rows]}))
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
        raise UserError(f"plugin {name!r} is not installed in this project, and {exc.message}",
                        fix=f"p2phost plugin install {name} (once a source has it: "
                            f"{exc.fix})") from exc
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
