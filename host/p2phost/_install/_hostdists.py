"""The host's own distributions: p2phost, p2phost-sdk and everything they require.

A plugin environment comes first on ``sys.path``, so a package in it shadows the host's
copy; the host's own distributions are therefore never installed there, and every plugin
gets the versions the host runs with. Which distributions those are follows from the
host's declared requirements (extras included, markers evaluated), not from whatever
else the host's venv happens to hold: that is what makes a lock the same on any machine.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from p2phost_sdk import normalize_name

from ._wheels import HOST_DISTRIBUTIONS

if TYPE_CHECKING:
    import importlib.metadata

    from packaging.requirements import Requirement


@cache
def host_distributions() -> dict[str, importlib.metadata.Distribution]:
    """The host's requirement closure that is installed here, by normalised name."""
    import importlib.metadata  # reads every METADATA file of the venv: only when asked

    from packaging.requirements import InvalidRequirement, Requirement

    found: dict[str, importlib.metadata.Distribution] = {}
    visited: dict[str, frozenset[str]] = {}
    stack: list[tuple[str, frozenset[str]]] = [(n, frozenset()) for n in sorted(HOST_DISTRIBUTIONS)]
    while stack:
        name, extras = stack.pop()
        key = normalize_name(name)
        before = visited.get(key)
        if before is not None and extras <= before:
            continue
        visited[key] = (before or frozenset()) | extras
        try:
            dist = found.get(key) or importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional requirement whose marker excluded it, or a broken host
        found[key] = dist
        for line in dist.requires or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if _applies(requirement, extras):
                stack.append((requirement.name, frozenset(requirement.extras)))
    return found


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    from packaging.markers import UndefinedEnvironmentName

    if requirement.marker is None:
        return True
    try:
        return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})
    except UndefinedEnvironmentName:
        return False


def host_version(name: str) -> str | None:
    """The version the host runs with, when ``name`` is one of its own distributions."""
    dist = host_distributions().get(normalize_name(name))
    return dist.version if dist is not None else None
