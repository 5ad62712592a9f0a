"""Whether ``p2phost.lock`` and the plugin environment already are what the manifest asks.

Then ``p2phost plugin install`` (no names) has nothing to resolve: it asks no registry and
changes nothing, as ``uv sync`` does with a lock that satisfies the project. A registry is
asked again as soon as anything differs: a plugin declared or dropped by hand, a specifier
its locked version no longer meets, a locked plugin missing from the environment or one
this host's API no longer fits (after upgrading p2phost), a locked plugin from a registry
that ``[registry] url`` no longer names (the lock would send ``plugin sync`` elsewhere to
the old one). ``plugin upgrade`` and
``plugin outdated`` always ask; that is how newer releases and yanks are seen.
"""

from __future__ import annotations

from collections.abc import Collection

from packaging.version import InvalidVersion, Version

from p2phost_sdk import (
    PluginMetadata,
    PluginMetadataError,
    host_api_compatible,
    normalize_name,
    parse_specifier,
)

from .._lock import Lock
from .._project import Project
from ._builtin import BUILTIN_SOURCE
from ._health import lock_gaps


def lock_satisfies(project: Project, lock: Lock, registries: Collection[str] = ()) -> bool:
    """Whether ``lock`` holds exactly the declared plugins (each at a version its specifier
    allows) and what they require, from the registries the manifest names (or this run's
    ``registries``), and the environment has each, fit for this host."""
    declared = {normalize_name(n): s for n, s in project.manifest.plugins.items()}
    if not declared or lock_gaps(lock):
        return False
    named = project.manifest.registries
    # Only a manifest that names registries pins where plugins come from: without one,
    # P2PHOST_REGISTRY or --registry is this run's choice, and the lock's source stands.
    if named and any(p.source not in {*named, *registries, BUILTIN_SOURCE}
                     for p in lock.plugins):
        return False
    for name, spec in declared.items():
        locked = lock.plugin(name)
        if locked is None:
            return False
        try:
            version, specifier = Version(locked.version), parse_specifier(spec)
        except InvalidVersion:
            return False
        # The resolver's rule: a pre-release only when the specifier names one.
        if version.is_prerelease and not specifier.prereleases:
            return False
        if not specifier.contains(version, prereleases=True):
            return False
    needed: set[str] = set()
    stack = list(declared)
    while stack:
        name = stack.pop()
        locked = lock.plugin(name)
        if locked is None:
            return False  # a requirement the lock lacks
        if name not in needed:
            needed.add(name)
            stack.extend(locked.requires)
    if needed != {p.name for p in lock.plugins}:
        return False
    installed = project.environment.installed()
    for locked in lock.plugins:
        dist = installed.get(locked.name)
        if dist is None or dist.version != locked.version:
            return False
        try:
            if not host_api_compatible(PluginMetadata.from_distribution(dist).host_api):
                return False
        except PluginMetadataError:
            return False
    return True
