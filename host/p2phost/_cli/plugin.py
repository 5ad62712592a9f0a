"""``p2phost plugin ...``: the plugins of this project."""

from __future__ import annotations

import typer
from rich.table import Table

from p2phost_sdk import PluginMetadata, host_api_compatible, normalize_name

from .._errors import UserError
from .._lock import Lock
from .._plugins import PluginManager
from .._project import Project
from ._output import console

plugin_app = typer.Typer(help="Install, inspect and author plugins.", no_args_is_help=True)


@plugin_app.command("list")
def list_plugins() -> None:
    """Installed plugins: name, version, kind, source, enabled."""
    project = Project.find()
    lock = Lock.load(project.lock_path)
    declared = project.manifest.plugins
    table = Table("name", "version", "kind", "source", "enabled", box=None)
    for name, dist in sorted(PluginManager(project).available().items()):
        locked = lock.plugin(name)
        try:
            kinds = ", ".join(PluginMetadata.from_distribution(dist).kinds)
        except UserError:
            kinds = "(invalid metadata)"
        source = locked.source if locked else str(dist.locate_file("")).rstrip("/")
        table.add_row(name, dist.version, kinds, source, "yes" if name in declared else "no")
    console.print(table)


@plugin_app.command("info")
def info(name: str = typer.Argument(..., help="The plugin's name.")) -> None:
    """What a plugin is, provides, requires and may do."""
    project = Project.find()
    dist = PluginManager(project).available().get(normalize_name(name))
    if dist is None:
        raise UserError(f"plugin {name!r} is not installed in this project",
                        fix=f"p2phost plugin install {name}")
    meta = PluginMetadata.from_distribution(dist)
    compatible = "yes" if host_api_compatible(meta.host_api) else "NO"
    console.print(f"{meta.name} {meta.version}" + (f": {meta.summary}" if meta.summary else ""))
    console.print(f"  kinds:        {', '.join(meta.kinds)}")
    console.print(f"  host-api:     {meta.host_api} (compatible with this host: {compatible})")
    for key, values in meta.provides.items():
        console.print(f"  provides:     {key} = {', '.join(values)}")
    for req, spec in meta.requires.items():
        console.print(f"  requires:     {req} {spec}")
    console.print(f"  capabilities: {', '.join(meta.capabilities) or 'none'}")
    for field in meta.config.fields:
        default = "" if field.default is None else f" = {field.default!r}"
        console.print(f"  config:       {field.name}: {field.type}{default}  {field.description}")
    console.print(f"  location:     {dist.locate_file('')}")


def register(app: typer.Typer) -> None:
    """Add the ``plugin`` group."""
    app.add_typer(plugin_app, name="plugin")
