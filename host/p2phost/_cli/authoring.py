"""``p2phost plugin new/check/build/publish/yank``: from nothing to a published plugin.

The work is in :mod:`p2phost._authoring`; it is imported inside the commands (Jinja2,
httpx and the build front end are not needed by every ``p2phost`` invocation).
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .._errors import UserError
from ._output import console, err_console
from .plugin import plugin_app

if TYPE_CHECKING:
    from .._authoring import CheckReport, Question, ScaffoldReport

_DIR = typer.Argument(Path("."), help="The plugin project's directory.",
                      show_default="the current directory")
_REGISTRY = typer.Option(None, "--registry", metavar="URL",
                         help="The registry (default: $P2PHOST_REGISTRY, the project's, "
                              "then http://127.0.0.1:8470).")
_TOKEN = typer.Option(None, "--token", metavar="TOKEN",
                      help="A publishing token (default: $P2PHOST_TOKEN).")


def _parse_sets(values: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not key=value",
                            fix="write it as --set author='Ada Lovelace'")
        given[key.strip()] = value
    return given


class _Asker:
    """Asks on the terminal, or reads answers piped to stdin. Without a terminal, input
    that is empty from the start (a script, a pasted README block) takes the defaults, as
    --no-input does; input that ends part-way is an error (answers went missing)."""

    def __init__(self) -> None:
        self.answered = False
        self.defaults = False

    def __call__(self, question: Question, default: str, problem: str | None) -> str:
        """The answer to ``question``; say what was wrong with the last answer first."""
        if self.defaults and problem is None:
            return default
        if problem:
            err_console.print(f"  invalid: {problem}", style="red")
        text = question.prompt
        if question.choices:
            text += f" ({', '.join(question.choices)})"
        if question.help and problem:
            text += f" [{question.help}]"
        try:
            answer = self._read(text, default)
        except (typer.Abort, EOFError):
            if not self.answered and not self.defaults and not sys.stdin.isatty():
                self.defaults = True
                return default
            raise UserError(f"no answer to {question.name!r}: input ended",
                            fix="pass --no-input to take the defaults, or "
                                f"--set {question.name}=VALUE") from None
        self.answered = True
        return answer

    @staticmethod
    def _read(text: str, default: str) -> str:
        if sys.stdin.isatty():
            return str(typer.prompt(text, default=default, show_default=bool(default)))
        # Piped: no prompt (nobody reads it, and at EOF it would be left on a line of output).
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n") or default


def _show_changes(report: ScaffoldReport) -> None:
    shown = [c for c in report.changes if c.action != "unchanged"]
    for change in shown:
        note = f" ({change.conflicts} conflict{'s' * (change.conflicts > 1)})" \
            if change.conflicts else ""
        console.print(f"  {change.action:<9} {change.path}{note}")
    if not shown:
        console.print("  nothing to change: the project matches the current template")


def new(
    kind: str | None = typer.Argument(None, help="transport, discovery, codec, security or app."),
    name: str | None = typer.Argument(None, help="The plugin's name, such as shout-codec."),
    directory: Path | None = typer.Option(None, "--dir", help="Where to write the project "
                                          "(default: ./NAME; with --update: .)."),
    no_input: bool = typer.Option(False, "--no-input", help="Ask nothing: take --set values "
                                  "and the defaults (so does empty input without a terminal)."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Answer a template question (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Write into a directory that is not "
                               "empty."),
    update_: bool = typer.Option(False, "--update", help="Re-render a generated project with "
                                 "the current template, merging your edits three ways."),
) -> None:
    """Scaffold a plugin project from a template (or --update one)."""
    from .._authoring import Template, generate, update

    given = _parse_sets(sets)
    ask = None if no_input else _Asker()
    if update_:
        if kind or name:
            raise UserError("--update takes no KIND or NAME (they are in the project)",
                            fix="p2phost plugin new --update [--dir DIR]")
        target = (directory or Path(".")).resolve()
        report = update(target, given, ask)
        console.print(f"updated {target} from the current {report.kind} template:")
        _show_changes(report)
        if report.conflicts:
            err_console.print(
                f"{len(report.conflicts)} file(s) have conflicts: edit the <<<<<<< ======= "
                ">>>>>>> blocks (yours above, the template's below), then run your tests")
            raise typer.Exit(1)
        return
    if kind is None or name is None:
        raise UserError("plugin new needs a KIND and a NAME",
                        fix="p2phost plugin new codec shout-codec")
    template = Template.load(kind)
    if "name" in given and given["name"] != name:
        raise UserError(f"--set name={given['name']} contradicts NAME {name!r}",
                        fix="give the name once, as NAME")
    target = (directory or Path(name)).resolve()
    if ask is not None:
        err_console.print(f"a new {kind} plugin: {template.summary} (Enter takes the [default])")
    report = generate(template, target, {**given, "name": name}, ask, force=force)
    where = os.path.relpath(target)
    console.print(f"created {report.answers['name']} ({kind} plugin) in {where}")
    console.print(f"next: cd {shlex.quote(where)} && python -m pytest && p2phost plugin check")


@contextmanager
def _spinner(text: str) -> Iterator[None]:
    """A spinner while long work runs, on a terminal (logs get the result lines only)."""
    if not console.is_terminal:
        yield
        return
    with console.status(text):
        yield


def build(
    directory: Path = _DIR,
    outdir: Path | None = typer.Option(None, "--outdir", help="Where to put the files "
                                       "(default: DIR/dist)."),
    no_isolation: bool = typer.Option(False, "--no-isolation", help="Build with this "
                                      "environment's hatchling (offline)."),
) -> None:
    """Build a wheel and an sdist (python -m build) and check the wheel's metadata."""
    from .._authoring import PluginProject, build_project

    project = PluginProject.open(directory)
    with _spinner(f"building {project.name} {project.version}"):
        made = build_project(project, outdir, isolation=not no_isolation)
    for path in made:
        console.print(f"built {os.path.relpath(path)}")


def _print_check(report: CheckReport) -> None:
    meta = report.metadata
    title = f"{meta.name} {meta.version} ({', '.join(meta.kinds)})" if meta \
        else report.project.name or str(report.project.root)
    console.print(f"checking {title} in {report.project.root}")
    for problem in report.problems:
        console.print(f"  ✗ {problem}")
    for warning in report.warnings:
        console.print(f"  ! {warning}")
    for kind, names in report.objects.items():
        console.print(f"  ✓ {kind}: the hooks make {', '.join(names)}")
    for kit in report.kits:
        skipped = f", {kit.skipped} skipped" if kit.skipped else ""
        if kit.failures:
            console.print(f"  ✗ {kit.kind} conformance kit: {len(kit.failures)} failed, "
                          f"{kit.passed} passed{skipped}")
            for failure in kit.failures[:20]:
                console.print(f"      {failure}")
        else:
            console.print(f"  ✓ {kit.kind} conformance kit: {kit.passed} passed{skipped}")
    if report.kit_error:
        console.print(f"  ✗ {report.kit_error}")


def check(
    directory: Path = _DIR,
    no_kits: bool = typer.Option(False, "--no-kits", help="Only lint the metadata and load "
                                 "the code; do not run the conformance kits."),
) -> None:
    """Lint the plugin's metadata, load its hooks and run its kinds' conformance kits."""
    from .._authoring import PluginProject, check_project

    project = PluginProject.open(directory)
    with _spinner(f"checking {project.name or project.root}"):
        report = check_project(project, kits=not no_kits)
    _print_check(report)
    failed = len(report.problems) + sum(len(k.failures) for k in report.kits) \
        + (report.kit_error is not None)
    if failed:
        err_console.print(f"check failed: {failed} problem(s)")
        raise typer.Exit(1)
    console.print("check passed")


def _registry_url(option: str | None) -> str:
    from .._install import registry_urls
    from .._project import Project

    try:
        manifest_registries = Project.find().manifest.registries
    except UserError:  # not inside a p2phost project: a plugin project usually is not
        manifest_registries = []
    return registry_urls(option, manifest_registries)[0]


def publish(
    targets: list[Path] = typer.Argument(None, help="A project directory (its dist/ files) "
                                         "or wheels and sdists.", show_default="."),
    registry: str | None = _REGISTRY,
    token: str | None = _TOKEN,
    # -- signing (p2phost key new makes the key) --
    sign: bool = typer.Option(False, "--sign", help="Sign each file with your publisher key."),
    key: Path | None = typer.Option(None, "--key", metavar="KEYFILE",
                                    help="The publisher key to sign with (implies --sign; "
                                         "default: ~/.config/p2phost/publisher.key)."),
) -> None:
    """Upload a plugin's wheel and sdist to a registry."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from .._authoring import RegistryClient, upload_files
    from .._keys import default_key_path, load_key, public_key_of, sign_file

    files = upload_files(targets or [Path(".")])
    signer = load_key(key or default_key_path()) if sign or key else None
    if signer is not None:
        console.print(f"signing with {public_key_of(signer)}")
    url = _registry_url(registry)
    with RegistryClient(url, token) as client, \
            Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                     console=console.rich, transient=True, disable=not console.is_terminal) as bar:
        for path in files:
            task = bar.add_task(f"uploading {path.name}", total=path.stat().st_size)
            signature = sign_file(signer, path).to_bytes() if signer else None
            published = client.upload(path, functools.partial(bar.advance, task), signature)
            bar.remove_task(task)
            console.print(f"published {published.filename} to {url}")
    console.print(f"{published.name} {published.version}: {published.url}")


def yank(
    name: str = typer.Argument(..., help="The plugin's name."),
    version: str = typer.Argument(..., help="The version to yank."),
    reason: str = typer.Option("", "--reason", help="Why (shown to users who pinned it)."),
    registry: str | None = _REGISTRY,
    token: str | None = _TOKEN,
) -> None:
    """Yank a published version: installers skip it unless it is pinned exactly."""
    from .._authoring import RegistryClient

    url = _registry_url(registry)
    with RegistryClient(url, token) as client:
        client.yank(name, version, reason)
    console.print(f"yanked {name} {version} on {url}" + (f": {reason}" if reason else ""))


def unyank(
    name: str = typer.Argument(..., help="The plugin's name."),
    version: str = typer.Argument(..., help="The version to make installable again."),
    registry: str | None = _REGISTRY,
    token: str | None = _TOKEN,
) -> None:
    """Undo a yank: installers pick the version again."""
    from .._authoring import RegistryClient

    url = _registry_url(registry)
    with RegistryClient(url, token) as client:
        answer = client.unyank(name, version)
    console.print(f"unyanked {name} {answer.get('version', version)} on {url}")


def register(app: typer.Typer) -> None:
    """Add the authoring commands to the ``plugin`` group (``app`` is unused: see plugin)."""
    plugin_app.command("new")(new)
    plugin_app.command("check")(check)
    plugin_app.command("build")(build)
    plugin_app.command("publish")(publish)
    plugin_app.command("yank")(yank)
    plugin_app.command("unyank")(unyank)
