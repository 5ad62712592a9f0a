"""What ``plugin install | upgrade | remove | sync`` do, without typer.

The typer commands in :mod:`.plugin` parse options and call these functions; so does the
fast path of :mod:`.main` for the scripted forms (``plugin install --yes``, ``plugin sync``),
which skips building the typer app. Whatever prints here prints the same either way.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._errors import UserError
from .._project import Project
from ._output import confirm as ask_or_refuse
from ._output import console, err_console, plain

if TYPE_CHECKING:
    from .._install import Change, Installer, SigningPolicy
    from .._lock import LockedFile

_REQUEST = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def parse_request(text: str) -> tuple[str, str]:
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
def installer(registry: str | None, *, require_signed: bool = False,
              trust_new_key: bool = False, command: str = "", refresh: bool = False,
              declaring: Sequence[str] = ()) -> Iterator[Installer]:
    """An installer for the project here, with a progress bar on a terminal.

    ``refresh``: revalidate every kept registry answer instead of using it while fresh.
    ``declaring``: the plugins this command adds to ``[plugins]``, whose ``[config.NAME]``
    may already be written. Its warnings (unsigned plugins) are printed when the block ends
    without an error.
    """
    from .._install._registry import plugin_sources, sources_origin
    from .._install._signing import SigningPolicy

    project = Project.find()
    if declaring:
        _allow_config_of(project, declaring)
    urls = plugin_sources(registry, project.manifest.registries)
    signing = SigningPolicy(require_signed or project.manifest.require_signed, trust_new_key,
                            command or "p2phost plugin install")
    with _installer_for(project, urls, signing, refresh, sources_origin(registry)) as made:
        yield made
    for warning in made.warnings:
        err_console.print(warning)


def _allow_config_of(project: Project, names: Sequence[str]) -> None:
    """Take ``[config.NAME]`` of a plugin being installed as no error: a user who pasted a
    page's ``[plugins]`` and ``[config.NAME]`` tables installs the plugin next, and the
    error's own fix was this very command."""
    from p2phost_sdk import normalize_name

    from .._manifest import Manifest

    manifest, problems = Manifest.check(project.manifest_path)
    tables = {f"[config.{normalize_name(n)}]" for n in names}
    left = [p for p in problems
            if not (p.field.startswith("[config.") and
                    f"[config.{normalize_name(p.field[8:-1])}]" in tables)]
    if left:
        raise left[0]
    if manifest is not None:
        project.__dict__["manifest"] = manifest  # Project.manifest is a cached_property


@contextmanager
def _installer_for(project: Project, urls: list[str], signing: SigningPolicy,
                   refresh: bool, origin: str) -> Iterator[Installer]:
    from .._install._installer import Installer

    if not console.is_terminal:
        def announce(label: str, total: int | None) -> Callable[[int], None]:
            size = f" ({total / 1024:.0f} KiB)" if total else ""
            console.print(f"downloading {label}{size}")
            return lambda n: None
        yield Installer(project, urls, progress=announce, signing=signing, refresh=refresh,
                        origin=origin)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console.rich, transient=True) as bar:
        def start(label: str, total: int | None) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)
        yield Installer(project, urls, progress=start, signing=signing, refresh=refresh,
                        origin=origin)


def change_line(change: Change) -> str:
    """What changes, with a new release's publisher and capabilities."""
    line = change.describe()
    if change.release is not None:
        kinds = ", ".join(change.release.kinds)
        owners = ", ".join(change.info.owners) if change.info else ""
        caps = ", ".join(change.release.capabilities) or "none"
        line += f"  [{kinds}]  publisher: {owners or 'unknown'}  capabilities: {caps}"
        wheel = change.release.wheel()
        line += f"  signed by: {wheel.publisher_key}" if wheel and wheel.publisher_key \
            else "  unsigned"
    return line


def show_and_confirm(changes: Sequence[Change], yes: bool,
                     installed: Collection[str] = ()) -> list[str]:
    """Print what changes, with each new release's publisher and capabilities; ask once.
    ``installed``: the plugins among them that are installed already, from the very file
    to lock (only their lock entry is written again; nothing to ask about). The lines
    printed."""
    lines = [change_line(change) if change.name not in installed else
             f"= {change.name} {change.new}: installed, but p2phost.lock lacks it "
             "(locks it again)" for change in changes]
    for line in lines:
        console.print(line, markup=False)
    if not yes and any(c.release is not None and c.name not in installed for c in changes):
        confirm("Install these plugins?", yes)
    return lines


def confirm(question: str, yes: bool, doing: str = "installing") -> None:
    """Ask ``question`` on a terminal; without one, only ``--yes`` goes ahead."""
    ask_or_refuse(question, yes, f"{doing} plugins", default=True)


def refuse_if_addresses_break(project: Project, removing: Sequence[str]) -> None:
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


def summary_line(changes: Sequence[Change], verb: str | Callable[[Change], str],
                 what: str = "plugin(s)",
                 relocked: Sequence[tuple[LockedFile, LockedFile | None]] = (),
                 nothing: str = "the plugins already match") -> str:
    """``VERB N plugin(s): name version, ...`` (a line per verb when ``verb`` tells each
    change's), then a line per entry only locked again (``Installer.relocked``); or
    ``nothing to do: NOTHING``."""
    groups: dict[str, list[Change]] = {}
    for change in changes:
        groups.setdefault(verb if isinstance(verb, str) else verb(change), []).append(change)
    lines = [f"{said} {len(group)} {what}: " + ", ".join(f"{c.name} {c.new or c.old}"
                                                         for c in group)
             for said, group in groups.items()]
    lines += [relock_line(new, old) for new, old in relocked]
    return "\n".join(lines) or f"nothing to do: {nothing}"


def upgrade_verb(change: Change) -> str:
    """What ``plugin upgrade`` did to the plugin of ``change``: a plugin not installed
    before (a fresh project, a new requirement) was installed, not upgraded."""
    return "installed" if change.old is None else "removed" if change.new is None \
        else "upgraded"


def relock_line(new: LockedFile, old: LockedFile | None) -> str:
    """What locking ``new`` again (the installed file; ``old`` its entry before) changed."""
    if old is None:
        why = "p2phost.lock had no entry for it"
    elif old.sha256 != new.sha256:
        why = "p2phost.lock now holds the sha256 of the file it verifies"
    elif old.signature != new.signature:
        why = "p2phost.lock now holds the signature that verifies its file"
    else:
        why = "p2phost.lock now holds the entry of the file it verifies"
    return f"locked {new.name} {new.version} again: {why}; the installed plugin is unchanged"


def installed_by(changes: Sequence[Change], made: Installer) -> list[Change]:
    """``changes`` less the entries ``made.apply`` only locked again (an edited lock):
    those were not installed, and :func:`summary_line` says so on their own line."""
    again = {new.name for new, _ in made.relocked}
    return [c for c in changes if c.name not in again]


def summary(changes: Sequence[Change], verb: str | Callable[[Change], str],
            what: str = "plugin(s)",
            relocked: Sequence[tuple[LockedFile, LockedFile | None]] = (),
            nothing: str = "the plugins already match") -> str:
    """Print :func:`summary_line`; the line printed."""
    line = summary_line(changes, verb, what, relocked, nothing)
    console.print(line, markup=False)
    return line


def install(requests: Sequence[str], registry: str | None = None, yes: bool = False,
            require_signed: bool = False, trust_new_key: bool = False,
            refresh: bool = False) -> None:
    """``p2phost plugin install [NAME[SPEC]...]``.

    The form ``plugin install --yes`` is recorded for ``p2phost._replay`` to do again while
    nothing it depended on changes (with or without ``--refresh``: the answers it keeps
    are the same).
    """
    from .._install import _record

    wanted = dict(parse_request(r) for r in requests)
    command = shlex.join(["p2phost", "plugin", "install", *requests])
    replayable = yes and not (requests or registry or require_signed or trust_new_key)
    start = _record.before() if replayable else None
    with installer(registry, require_signed=require_signed, trust_new_key=trust_new_key,
                   command=command, refresh=refresh, declaring=list(wanted)) as made:
        if start is not None and not _record.unchanged(start):
            start = None  # changed while the installer read it
        plan = made.plan_install(wanted)
        shown = show_and_confirm(plan.changes, yes,
                                 {c.name for c in plan.changes if made.already_installed(c)})
        made.apply(plan)
    changes = installed_by(plan.changes, made) or made.rebuilt
    done = summary_line(changes, "installed", relocked=made.relocked)
    if made.client.down and changes:  # on the "installed" line, before any "locked again"
        first, newline, rest = done.partition("\n")
        done = f"{first} (from the built-in source: {', '.join(made.client.down)} did not " \
               f"answer){newline}{rest}"
    console.print(done, markup=False)
    if start is not None:
        # What was printed, in order (``installer`` printed the warnings as it ended).
        output = [(0, line) for line in shown] + [(1, w) for w in made.warnings] + [(0, done)]
        if all(plain(text) for _, text in output):  # else rich changed them as it printed
            _record.record(made, start, output)


def upgrade(names: Sequence[str], latest: bool = False, registry: str | None = None,
            yes: bool = False, require_signed: bool = False,
            trust_new_key: bool = False) -> None:
    """``p2phost plugin upgrade [--latest] [NAME...]``."""
    command = shlex.join(["p2phost", "plugin", "upgrade", *(["--latest"] if latest else []),
                          *names])
    # Looking for newer releases: every kept registry answer is revalidated (304s).
    with installer(registry, require_signed=require_signed, trust_new_key=trust_new_key,
                   command=command, refresh=True) as made:
        plan = made.plan_upgrade(names, latest=latest)
        show_and_confirm(plan.changes, yes)
        made.apply(plan)
        beyond = [] if latest else [r for r in made.outdated()
                                    if r[3] != r[2] and (not names or r[0] in names)]
    summary(installed_by(plan.changes, made), upgrade_verb, relocked=made.relocked,
            nothing="no newer release fits this host" if latest else
            "no newer release within the ranges p2phost.toml allows")
    for name, _, wanted, newest in beyond:
        console.print(f"{name} {newest} is out of the range p2phost.toml allows (newest "
                      f"within it: {wanted}); take it with: p2phost plugin upgrade --latest "
                      f"{name}", markup=False)


def remove(names: Sequence[str], force: bool = False, yes: bool = False) -> None:
    """``p2phost plugin remove NAME...``."""
    with installer(None) as made:
        plan = made.plan_remove(names, force=force)
        if not force:
            refuse_if_addresses_break(made.project, plan.undeclare)
        for change in plan.changes:
            console.print(change.describe(), markup=False)
        confirm("Remove these plugins?", yes, "removing")
        made.apply(plan)
    console.print(f"removed {', '.join(plan.undeclare)}")


def sync(offline: bool = False, require_signed: bool = False) -> None:
    """``p2phost plugin sync``."""
    with installer(None, require_signed=require_signed) as made:
        changes = made.sync(offline=offline)
        missing = [n for n in made.project.manifest.plugins if made.lock.plugin(n) is None]
    for path, size in made.removed_leftovers:
        console.print(f"removed {path} ({size / 2**20:.1f} MiB), left by an interrupted "
                      "install", markup=False)
    for change in changes:
        console.print(change.describe(), markup=False)
    summary(changes, "synced", "distribution(s)",
            nothing="the plugin environment already holds what p2phost.lock says")
    if missing:
        console.print(f"warning: p2phost.toml declares {', '.join(missing)}, which "
                      "p2phost.lock does not have: run `p2phost plugin install`")
