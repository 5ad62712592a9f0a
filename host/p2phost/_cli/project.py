"""Project commands: ``init`` and ``doctor``."""

from __future__ import annotations

import fcntl
import json
import platform
import re
from pathlib import Path

import typer
from rich.markup import escape

from p2phost_sdk import HOST_API, PluginMetadata

from .. import __version__
from .._errors import UserError
from .._manifest import DEFAULT_REGISTRY, MANIFEST_NAME, Manifest
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
    """Write p2phost.toml (a working default: tcp + noise + json + static discovery + echo)."""
    _check_listen(listen, directory)
    directory = directory.resolve()
    manifest = directory / MANIFEST_NAME
    if manifest.exists() and not force:
        raise UserError(f"{manifest} already exists", fix="p2phost init --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    node_name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.name) or "node"
    text = DEFAULT_MANIFEST.format(name=node_name, listen=listen, registry=DEFAULT_REGISTRY)
    manifest.write_text(_with_transport(text, listen), encoding="utf-8")
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text(".p2phost/\n", encoding="utf-8")
    peer_id = Project(directory).identity().peer_id
    console.print(f"wrote {manifest}")
    console.print(f"peer id: {peer_id}")
    console.print("next: p2phost plugin install, then p2phost run")


def _check_listen(listen: str, directory: Path) -> None:
    """Refuse a malformed ``--listen`` before anything is written (a usage error, exit 2):
    no plugin is installed yet, so the form is checked without one."""
    import shlex

    from p2phost_sdk import AddressError

    from .._address_form import check_form

    try:
        check_form(listen)
    except AddressError as exc:
        # Quoted: a shell reads tcp://[::1]:7400's brackets, or a #PEERID, as its own.
        raise UserError(f"--listen: {exc}", fix=f"p2phost init {shlex.quote(str(directory))} "
                        f"--listen {shlex.quote(exc.expected or '')}") from None


def _with_transport(text: str, listen: str) -> str:
    """The default manifest ``text`` declaring the transport that serves ``listen``
    (redis:// gets redis-transport, not tcp-transport); unchanged for tcp:// and for a
    scheme no official plugin serves (``run`` then names the search that finds one)."""
    from .._schemes import official_transports, scheme_of

    names = official_transports(scheme_of(listen)) or ["tcp-transport"]
    return text.replace('tcp-transport = ">=1.0,<2"\n',
                        "".join(f'{name} = ">=1.0,<2"\n' for name in names), 1)


class _Report:
    """Doctor's findings, printed as they come (or gathered for ``--json``)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.checks: list[dict[str, str | None]] = []

    def __call__(self, ok: bool, text: str, fix: str | None = None, *,
                 warning: bool = False) -> None:
        status = "ok" if ok else "warning" if warning else "problem"
        self.checks.append({"status": status, "message": text, "fix": fix})
        if self.as_json:
            return
        mark = {"ok": "[green]ok[/]  ", "warning": "[yellow]WARN[/]",
                "problem": "[red]FAIL[/]"}[status]
        console.print(f"{mark} {escape(text)}", markup=True)
        if fix and not ok:
            console.print(f"     fix: {fix}", markup=False)

    @property
    def problems(self) -> int:
        return sum(1 for c in self.checks if c["status"] == "problem")

    def finish(self, project: Path | None) -> None:
        if self.as_json:
            print(json.dumps({"version": __version__, "host_api": str(HOST_API),
                              "project": str(project) if project else None,
                              "ok": not self.problems, "problems": self.problems,
                              "checks": self.checks}))
        elif self.problems:
            console.print(f"{self.problems} problem(s) found")
        else:
            console.print("no problems found")
        if self.problems:
            raise typer.Exit(1)


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON "
                                 "(shape: docs/cli.md)."),
) -> None:
    """What is installed, what the manifest needs, what is wrong and how to fix it."""
    from .._lock import Lock
    from .._plugins import PluginManager  # pluggy: doctor's, not init's

    report = _Report(as_json)
    if not as_json:
        console.print(f"p2phost {__version__}, host-api {HOST_API}, Python "
                      f"{platform.python_version()} at {platform.python_implementation()}")
    try:
        project = Project.find()
    except UserError as exc:
        report(False, exc.message, exc.fix)
        report.finish(None)
        return
    report(True, f"project at {project.root}")
    manifest, manifest_problems = Manifest.check(project.manifest_path)
    for problem in manifest_problems:
        report(False, problem.message, problem.fix)
    if manifest is None or manifest_problems:
        report.finish(project.root)
        return
    report(True, f"{MANIFEST_NAME} declares {len(manifest.plugins)} plugins")
    project.__dict__["manifest"] = manifest  # already validated: do not read it twice
    gaps = []
    try:
        lock = Lock.load(project.lock_path)
        report(True, f"{project.lock_path.name}: {len(lock.plugins)} plugins locked")
        from .._install._health import gaps as environment_gaps

        gaps = environment_gaps(lock, project.environment, manifest.plugins)
        for gap in gaps:
            report(False, gap.message, gap.fix)
    except UserError as exc:
        report(False, exc.message, exc.fix)
    _check_leftovers(project, report)
    from .._runtime.delivery._check import check_state, missing_database, unreachable

    for ok, text, fix in check_state(project.state_dir):  # what would stop `run`
        report(ok, text, fix)
    if (missing := missing_database(project.state_dir)) is not None:  # starts, but loses
        report(False, *missing, warning=True)
    for text, fix in unreachable(project.state_dir):  # `run` starts, but they wait
        report(False, text, fix, warning=True)
    manager = PluginManager(project)
    plugin_problems = manager.problems()
    for plugin_problem in plugin_problems:
        report(False, plugin_problem.message, plugin_problem.fix)
    resolved, _ = manager.resolve()
    metadata = [m for _, _, m, _ in resolved]
    _check_schemes(project, metadata, report)
    _check_security(metadata, report)
    if not plugin_problems and not gaps:  # importing would only fail on the same gap
        try:
            loaded = manager.load()
            names = ", ".join(f"{p.metadata.name} {p.metadata.version}" for p in loaded.plugins)
            report(True, f"plugins load: {names or 'none'}")
        except UserError as exc:
            report(False, exc.message, exc.fix)
    for ok, text, fix in running_discovery(project):
        report(ok, text, fix)
    report.finish(project.root)


def _check_leftovers(project: Project, report: _Report) -> None:
    """Generations an interrupted install left in .p2phost/env (skipped while one runs)."""
    lock_file = project.state_dir / "install.lock"
    try:
        handle = open(lock_file) if lock_file.exists() else None
    except OSError:
        return
    try:
        if handle is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                report(True, "an install is running: not looking for leftovers now")
                return
        leftovers = project.environment.leftovers()
    finally:
        if handle is not None:
            handle.close()
    if leftovers:
        size = sum(b for _, b in leftovers) / 2**20
        fix = "p2phost plugin sync" if project.lock_path.exists() else \
            "p2phost plugin install --yes (then nothing is left over)"
        report(False, f"{len(leftovers)} leftover(s) of an interrupted install in "
               f"{project.environment.root} ({size:.1f} MiB): "
               + ", ".join(p.name for p, _ in leftovers), fix)


def _check_schemes(project: Project, metadata: list[PluginMetadata], report: _Report) -> None:
    """Every [node] listen and connect address, and every static-discovery peer, has a
    declared transport for its scheme, and the form of its official scheme."""
    from p2phost_sdk import AddressError

    from .._address_form import check_form
    from .._runtime._errors import bad_address
    from .._schemes import scheme_of, served_by, unserved

    served = served_by(metadata)
    # Static discovery's peers are dialled like [node] connect: a peer no transport
    # serves is otherwise only a warning that `run` repeats on every round.
    for key, address, error in unserved(project, metadata):
        if error is None:
            try:
                # The form a start checks (tcp://::1:7400, a bad port), as far as it is
                # known without importing the transport: not "ok", then a refused start.
                check_form(address, peer=key != "[node] listen")
            except AddressError as exc:
                error = bad_address(exc, key)
        if error is None:
            report(True, f"{key} {address}: served by {served[scheme_of(address)]}")
        else:
            report(False, error.message, error.fix)


def _check_security(metadata: list[PluginMetadata], report: _Report) -> None:
    """The security plugins declared are the ones used: the node uses the first only."""
    security = [m.name for m in metadata if "security" in m.kinds]
    if not security:
        report(False, "no security plugin: connections are NOT authenticated or encrypted",
               "p2phost plugin install noise-security", warning=True)
    elif len(security) == 1:
        report(True, f"security: {security[0]} on every connection")
    else:
        report(False, f"security plugins {', '.join(security)} are declared, but a node uses "
               f"one: {security[0]}; {', '.join(security[1:])} is never used",
               f"p2phost plugin remove {' '.join(security[1:])}")


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``doctor``."""
    app.command()(init)
    app.command()(doctor)
