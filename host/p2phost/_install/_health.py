"""Whether a plugin environment really holds what its plugins need.

Three gaps, each fixed by ``p2phost plugin sync``:

- the lock lacks a package a locked plugin requires (a lock written by a host that left
  it to its own venv, or edited by hand): ``sync`` locks the plugins' requirements again;
- a locked distribution is absent from the plugin environment, at another version, or
  missing files (deleted by hand, a disk restored from an old backup) or has files of
  another size than its RECORD says (written to): ``sync`` reinstalls;
- an installed distribution requires a package that neither the plugin environment nor
  the host provides: ``sync`` locks again and installs.

``doctor`` reports them; ``sync`` uses them so that its "nothing to do" is true.

And two ways the lock disagrees with the project, each fixed by ``p2phost plugin install
--yes`` (``doctor`` and ``run --check`` report them): a declared plugin the lock lacks, and
a locked file whose sha256 is not the one the active generation was built from (the lock
edited or replaced since: ``sync`` would refuse its signature, or install another file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from p2phost_sdk import normalize_name

from .._environment import PluginEnvironment
from .._lock import Lock, LockedFile
from ._hostdists import host_distributions
from ._wheels import HOST_DISTRIBUTIONS

if TYPE_CHECKING:
    from importlib.metadata import Distribution

    from packaging.requirements import Requirement

FIX = "p2phost plugin sync"


@dataclass(frozen=True)
class Gap:
    """One thing the plugin environment lacks, said so a user can act on it."""

    #: The distribution that is missing, stale or damaged (normalised).
    name: str
    message: str
    fix: str = FIX


def _requirements(lines: Iterable[str]) -> list[Requirement]:
    lines = list(lines)
    if not lines:
        return []
    # packaging.requirements loads its marker and tag machinery: only when there is a line.
    from packaging.markers import UndefinedEnvironmentName
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        try:
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                out.append(requirement)
        except UndefinedEnvironmentName:
            continue
    return out


def _fits(requirement: Requirement, version: str) -> bool:
    from packaging.version import InvalidVersion

    try:
        return requirement.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False


def gaps(lock: Lock, env: PluginEnvironment, declared: Iterable[str] = ()) -> list[Gap]:
    """Everything ``plugin sync`` or ``install`` would repair (for ``doctor``), one gap
    per distribution."""
    found = disagreements(lock, env, declared)
    found += [g for g in lock_gaps(lock) if g.name not in {f.name for f in found}]
    named = {g.name for g in found}
    return found + [g for g in environment_gaps(lock, env) if g.name not in named]


def disagreements(lock: Lock, env: PluginEnvironment, declared: Iterable[str]) -> list[Gap]:
    """Declared plugins ``lock`` lacks though the active generation was built with them,
    then locked files other than the ones the active generation was built from (no
    network: the installer's record of that generation). A declared plugin that was never
    installed is the plugin manager's report ("not installed"), not a lock's."""
    built = env.built_from()
    found = [Gap(name, f"{name} is declared in p2phost.toml but has no entry in p2phost.lock",
                 fix="p2phost plugin install --yes (locks it again)")
             for name in sorted({normalize_name(n) for n in declared})
             if name in (built or {}) and lock.plugin(name) is None]
    return found + [edited_entry(lock, entry, installed)
                    for entry, installed in changed_hashes(lock, built)]


def edited_entry(lock: Lock, entry: LockedFile, installed: str) -> Gap:
    """``entry`` of ``lock`` names another file than the one (sha256 ``installed``) the
    active generation was built from: what ``doctor`` reports, and what an install says
    when the file that entry names cannot be had (its source serves another)."""
    # A plugin is fetched again by its install; a Python package a plugin needs is
    # resolved again by sync (it drops the edited entry, see Installer.sync).
    repair = (f"p2phost plugin install {entry.name} --yes (fetches it again and locks "
              "the file it verifies)" if lock.plugin(entry.name) is not None else
              f"p2phost plugin sync (resolves {entry.name} again and locks the file it "
              "verifies)")
    return Gap(entry.name, f"p2phost.lock gives {entry.name} {entry.version} the sha256 "
                           f"{entry.sha256[:16]}…, but the plugin environment was installed "
                           f"from {installed[:16]}…: the lock was edited or replaced",
               fix=f"restore p2phost.lock from version control, or {repair}")


def changed_hashes(lock: Lock, built: Mapping[str, str] | None) -> list[tuple[LockedFile, str]]:
    """Locked files (with the sha256 installed instead) whose version the active generation
    holds but built from another file; empty when that is unknown. ``built``: what
    :meth:`PluginEnvironment.built_from` says (read by the caller, once for all its checks)."""
    if not built:
        return []
    return [(entry, built[entry.name]) for entry in lock.files
            if built.get(entry.name) not in (None, entry.sha256)]


def lock_gaps(lock: Lock) -> list[Gap]:
    """Requirements of locked plugins that neither the lock's packages nor the host meet."""
    needs = [(plugin, requirement) for plugin in lock.plugins
             for requirement in _requirements(plugin.dependencies)]
    if not needs:  # the commonest case: then the host's venv need not be read at all
        return []
    locked = {p.name: p.version for p in lock.packages}
    host = {n: d.version for n, d in host_distributions().items()}
    needers: dict[str, list[str]] = {}
    for plugin, requirement in needs:
        name = normalize_name(requirement.name)
        version = locked.get(name) or host.get(name)
        if version is None or not _fits(requirement, version):
            needers.setdefault(name, []).append(
                f"{plugin.name} {plugin.version} needs {requirement}")
    return [Gap(name, f"p2phost.lock has no {name} that fits ({'; '.join(why)})")
            for name, why in sorted(needers.items())]


def environment_gaps(lock: Lock, env: PluginEnvironment) -> list[Gap]:
    """Locked distributions the plugin environment lacks, has at another version, or lost
    files of; then requirements of installed distributions that nothing provides."""
    installed = env.installed()
    gaps = []
    for entry in lock.files:
        dist = installed.get(entry.name)
        if dist is None:
            gaps.append(Gap(entry.name, f"{entry.name} {entry.version} is in p2phost.lock but "
                                        "not in the plugin environment"))
        elif dist.version != entry.version:
            gaps.append(Gap(entry.name, f"the plugin environment has {entry.name} "
                                        f"{dist.version}, p2phost.lock says {entry.version}"))
        elif lost := lost_files(dist):
            shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
            verb = "has lost or changed" if any(f.endswith(" (changed)") for f in lost) \
                else "lacks"
            gaps.append(Gap(entry.name, f"{entry.name} {entry.version} in the plugin "
                                        f"environment {verb} {shown}"))
    reported = {g.name for g in gaps}
    gaps += [g for g in requirement_gaps(installed) if g.name not in reported]
    return gaps


def requirement_gaps(installed: dict[str, Distribution]) -> list[Gap]:
    """Requirements of the installed plugins and packages that nothing provides."""
    host = {n: d.version for n, d in host_distributions().items()}
    # Keyed by distribution name: that is what Requires-Dist names (plugins are installed
    # under their plugin name, p2phost-NAME distributions under NAME).
    by_dist = {normalize_name(d.metadata["Name"]): d for d in installed.values()}
    needers: dict[str, list[str]] = {}
    for name, dist in sorted(installed.items()):
        for requirement in _requirements(dist.requires or ()):
            needed = normalize_name(requirement.name)
            if needed in HOST_DISTRIBUTIONS:  # the loader checks the host API itself
                continue
            have = by_dist.get(needed)
            version = have.version if have is not None else host.get(needed)
            if version is None or not _fits(requirement, version):
                needers.setdefault(needed, []).append(f"{name} {dist.version} needs "
                                                      f"{requirement}")
    return [Gap(name, f"{name} is missing from the plugin environment ({'; '.join(why)})")
            for name, why in sorted(needers.items())]


def lost_files(dist: Distribution) -> list[str]:
    """Files the distribution's RECORD lists that are no longer there, or not at the size
    it gives (installed layout)."""
    lost = []
    for file in dist.files or ():
        parts = PurePosixPath(str(file)).parts
        if not parts or parts[0] == ".." or file.suffix == ".pyc":
            continue
        if parts[0].endswith(".data"):  # unpack_wheel moved purelib/platlib to the top
            if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                continue
            parts = parts[2:]
        shown = PurePosixPath(*parts).as_posix()
        try:
            size = os.stat(str(dist.locate_file(PurePosixPath(*parts)))).st_size
        except OSError:
            lost.append(shown)
            continue
        if file.size is not None and size != file.size:  # written to since it was installed
            lost.append(f"{shown} (changed)")
    return lost
