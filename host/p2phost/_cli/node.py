"""Node commands. ``run --check`` loads the declared plugins and reports them.

The node runtime (run, id, ping, send, peers) is built on this by the runtime issue.
"""

from __future__ import annotations

import typer

from .._errors import UserError
from .._plugins import PluginManager, describe
from .._project import Project
from ._output import console


def check_plugins(project: Project) -> None:
    """Load every declared plugin, build its parts, and print what loaded."""
    loaded = PluginManager(project).load()
    parts = loaded.build(project.identity().peer_id, project.manifest.node.max_frame_size)
    for line in describe(loaded.plugins):
        console.print(f"loaded {line}")
    console.print(
        f"transports: {', '.join(sorted(parts.transports)) or 'none'}; "
        f"codecs: {', '.join(parts.codecs) or 'none'}; "
        f"apps: {', '.join(type(a).name or type(a).__name__ for a in parts.apps) or 'none'}"
    )


def run(
    check: bool = typer.Option(False, "--check", help="Load the plugins, report, and exit."),
) -> None:
    """Run the node of ./p2phost.toml until SIGINT/SIGTERM."""
    project = Project.find()
    if check:
        check_plugins(project)
        return
    raise UserError("the node runtime is not built yet", fix="p2phost run --check")


def register(app: typer.Typer) -> None:
    """Add the node commands."""
    app.command()(run)
