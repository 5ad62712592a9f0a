"""Project commands: ``init`` and ``doctor``."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import typer

from p2phost_sdk import HOST_API

from .. import __version__
from .._errors import UserError
from .._lock import Lock
from .._manifest import DEFAULT_REGISTRY, MANIFEST_NAME, Manifest
from .._plugins import PluginManager
from .._project import Project
from ._discovery_status import running_discovery
from ._output import console

DEFAULT_MANIFEST = """\
# p2phost project manifest: what this node is and which plugins it runs.
[node]
name = "{name}"
listen = ["{listen}"]

# Plugins come from the registries listed here, then from the official plugins built into
# p2phost (works offline). To add one:
# [registry]
# url = "{registry}"      # several may be listed: url = ["...", "..."]

[plugins]                 # name = PEP 440 version specifier; "*" means any version
tcp-transport = ">=1.0,<2"
noise-security = ">=1.0,<2"   # every connection authenticated and encrypted
json-codec = ">=1.0,<2"
static-discovery = ">=1.0,<2"
echo = ">=1.0,<2"

[config.static-discovery] # peers dialled at start
peers = []
"""


def init(
    directory: Path = typer.Argument(Path("."), help="Where to create the project."),
    name: str = typer.Option("", help="The node's name (default: the directory's name)."),
    listen: str = typer.Option("tcp://127.0.0.1:7400", help="The address to listen on."),
    force: bool = typer.Option(False, "--force", help=f"Overwrite an existing {MANIFEST_NAME}."),
) -> None:
    """Write p2phost.toml (a working default: tcp + json + static discovery + echo)."""
    directory = directory.resolve()
    manifest = directory / MANIFEST_NAME
    if manifest.exists() and not force:
        raise UserError(f"{manifest} already exists", fix="p2phost init --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    node_name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.name) or "node"
    manifest.write_text(DEFAULT_MANIFEST.format(name=node_name, listen=listen,
                                                registry=DEFAULT_REGISTRY), encoding="utf-8")
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text(".p2phost/\n", encoding="utf-8")
    peer_id = Project(directory).identity().peer_id
    console.print(f"wrote {manifest}")
    console.print(f"peer id: {peer_id}")
    console.print("next: p2phost plugin install, then p2phost run")


def doctor() -> None:
    """What is installed, what the manifest needs, what is wrong and how to fix it."""
    problems: list[str] = []

    def report(ok: bool, text: str, fix: str | None = None) -> None:
        mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
        console.print(f"{mark} {text}", markup=True)
        if not ok:
            problems.append(text)
            if fix:
                console.print(f"     fix: {fix}")

    console.print(f"p2phost {__version__}, host-api {HOST_API}, Python "
                  f"{platform.python_version()} at {platform.python_implementation()}")
    try:
        project = Project.find()
    except UserError as exc:
        report(False, exc.message, exc.fix)
        raise typer.Exit(1) from None
    report(True, f"project at {project.root}")
    manifest, manifest_problems = Manifest.check(project.manifest_path)
    for problem in manifest_problems:
        report(False, problem.message, problem.fix)
    if manifest is None or manifest_problems:
        raise typer.Exit(1)
    report(True, f"{MANIFEST_NAME} declares {len(manifest.plugins)} plugins")
    project.__dict__["manifest"] = manifest  # already validated: do not read it twice
    try:
        lock = Lock.load(project.lock_path)
        report(True, f"{project.lock_path.name}: {len(lock.plugins)} plugins locked")
    except UserError as exc:
        report(False, exc.message, exc.fix)
    manager = PluginManager(project)
    plugin_problems = manager.problems()
    for plugin_problem in plugin_problems:
        report(False, plugin_problem.message, plugin_problem.fix)
    if not plugin_problems:
        try:
            loaded = manager.load()
            names = ", ".join(f"{p.metadata.name} {p.metadata.version}" for p in loaded.plugins)
            report(True, f"plugins load: {names or 'none'}")
        except UserError as exc:
            report(False, exc.message, exc.fix)
    for ok, text, fix in running_discovery(project):
        report(ok, text, fix)
    if problems:
        console.print(f"{len(problems)} problem(s) found")
        raise typer.Exit(1)
    console.print("no problems found")


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``doctor``."""
    app.command()(init)
    app.command()(doctor)
