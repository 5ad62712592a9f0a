"""Pick plugin versions: newest that satisfies every specifier, ``requires`` and HOST_API.

The backtracking is resolvelib's (pip's resolver). This module supplies the plugin
rules — no yanked release unless pinned exactly, no release whose ``host-api`` this
host does not satisfy, prefer what is already locked unless asked to upgrade — and
turns a failure into one sentence saying why and what would fit.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from resolvelib import AbstractProvider, BaseReporter, ResolutionImpossible, Resolver
from resolvelib.resolvers import RequirementInformation, ResolutionTooDeep

from p2phost_sdk import normalize_name, parse_specifier

from ._errors import ResolutionError
from ._registry import PluginInfo, RegistryClient, Release


@dataclass(frozen=True)
class Requirement:
    """``name`` within ``specifier``, asked for by ``parent`` (None: the user/manifest)."""

    name: str
    specifier: SpecifierSet
    parent: str | None = None

    @classmethod
    def parse(cls, name: str, spec: str, parent: str | None = None) -> Requirement:
        """A requirement from a plugin name and a specifier string (``*`` for any)."""
        return cls(normalize_name(name), parse_specifier(spec), parent)

    def pins(self, release: Release) -> bool:
        """Whether this requirement names exactly ``release``'s version (``==X``)."""
        return any(s.operator in ("==", "===") and "*" not in s.version
                   and s.contains(release.version, prereleases=True) for s in self.specifier)

    def describe(self) -> str:
        """``name>=1,<2 (required by parent)`` for messages."""
        spec = str(self.specifier) or " (any version)"
        who = f"required by {self.parent}" if self.parent else "requested"
        return f"{self.name}{spec} ({who})"


@dataclass(frozen=True)
class Resolution:
    """The chosen release of every plugin, dependencies before their dependents."""

    releases: tuple[Release, ...]
    infos: Mapping[str, PluginInfo]


class _Provider(AbstractProvider[Requirement, Release, str]):
    def __init__(self, client: RegistryClient, preferred: Mapping[str, str]) -> None:
        self.client = client
        self.preferred = preferred

    def identify(self, requirement_or_candidate: Requirement | Release) -> str:
        return requirement_or_candidate.name

    def get_preference(self, identifier: str, resolutions: Mapping[str, Release],
                       candidates: Mapping[str, Iterator[Release]],
                       information: Mapping[str, Iterator[RequirementInformation[
                           Requirement, Release]]],
                       backtrack_causes: Sequence[RequirementInformation[
                           Requirement, Release]]) -> int:
        # Fewest choices first: conflicts surface early and backtracking stays short.
        return sum(1 for _ in candidates[identifier])

    def find_matches(self, identifier: str, requirements: Mapping[str, Iterator[Requirement]],
                     incompatibilities: Mapping[str, Iterator[Release]]) -> list[Release]:
        reqs = list(requirements[identifier])
        bad = {r.version for r in incompatibilities[identifier]}
        found = [r for r in self.client.plugin(identifier).releases
                 if r.version not in bad and usable(r, reqs)]
        preferred = self.preferred.get(identifier)
        # Keep what is locked when it still fits: installing one plugin upgrades no other.
        found.sort(key=lambda r: (str(r.version) == preferred, r.version), reverse=True)
        return found

    def is_satisfied_by(self, requirement: Requirement, candidate: Release) -> bool:
        return requirement.specifier.contains(candidate.version, prereleases=True)

    def get_dependencies(self, candidate: Release) -> list[Requirement]:
        return [Requirement.parse(n, s, parent=f"{candidate.name} {candidate.version}")
                for n, s in candidate.requires.items()]


def matches(release: Release, requirements: Sequence[Requirement]) -> bool:
    """Whether every specifier admits ``release`` (a pre-release only if one names it: pip's
    rule, spelled out because packaging's own default changed across versions)."""
    if release.version.is_prerelease and not any(r.specifier.prereleases
                                                 for r in requirements):
        return False
    return all(r.specifier.contains(release.version, prereleases=True) for r in requirements)


def usable(release: Release, requirements: Iterable[Requirement]) -> bool:
    """Whether ``release`` may be picked for ``requirements`` on this host."""
    reqs = list(requirements)
    if not matches(release, reqs):
        return False
    if release.yanked and not any(r.pins(release) for r in reqs):
        return False
    return release.unfit_reason() is None


def resolve(client: RegistryClient, requirements: Sequence[Requirement],
            preferred: Mapping[str, str] | None = None) -> Resolution:
    """The newest releases satisfying ``requirements``; raises :class:`ResolutionError`."""
    for req in requirements:
        client.plugin(req.name)  # an unknown name fails first, with suggestions
    resolver: Resolver[Requirement, Release, str] = Resolver(
        _Provider(client, preferred or {}), BaseReporter())
    try:
        result = resolver.resolve(requirements, max_rounds=500)
    except ResolutionImpossible as exc:
        raise _explain(client, list(exc.causes)) from None
    except ResolutionTooDeep:
        raise ResolutionError("plugin requirements are too tangled to resolve",
                              fix="pin versions in [plugins] of p2phost.toml") from None
    chosen = dict(result.mapping)
    graph = {name: [d for d in release.requires if d in chosen]
             for name, release in chosen.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(f"{n} {chosen[n].version}" for n in reversed(exc.args[1]))
        raise ResolutionError(f"plugin dependency cycle: {cycle}",
                              fix="tell the plugins' authors; a plugin cannot require "
                                  "itself through others") from None
    infos = {name: client.plugin(name) for name in order}
    return Resolution(tuple(chosen[n] for n in order), infos)


def _explain(client: RegistryClient,
             causes: list[RequirementInformation[Requirement, Release]]) -> ResolutionError:
    """One sentence: which requirements clash, or why no version of a plugin fits."""
    by_name: dict[str, list[Requirement]] = {}
    for cause in causes:
        by_name.setdefault(cause.requirement.name, []).append(cause.requirement)
    name, reqs = next(iter(by_name.items()))
    unique = list(dict.fromkeys(reqs))
    info = client.plugin(name)
    fitting = info.newest_fitting()
    hint = f"; newest that fits this host: {fitting.version}" if fitting else \
        "; no version of it fits this host"
    if len(unique) > 1 and not any(usable(r, unique) for r in info.releases):
        clash = ", ".join(r.describe() for r in unique)
        return ResolutionError(f"conflicting requirements for {name}: {clash}{hint}",
                               fix="change the specifiers in [plugins] of p2phost.toml so "
                                   "they can agree, or upgrade the plugins that require it")
    # One requirement (or compatible ones): say why each matching release was refused.
    matching = [r for r in info.releases if matches(r, unique)]
    wanted = " and ".join(q.describe() for q in unique)
    if not matching:
        known = ", ".join(str(r.version) for r in info.releases[:5]) or "none"
        reason = f"no release of {name} matches {wanted} (releases: {known})"
    else:
        newest = matching[0]
        if newest.yanked:
            why = f"{name} {newest.version} was yanked" + \
                (f" ({newest.yanked_reason})" if newest.yanked_reason else "") + \
                f"; pin it with '{name}=={newest.version}' to install it anyway"
        else:
            why = newest.unfit_reason() or f"{name} {newest.version} conflicts with other plugins"
        reason = f"{why}, and {wanted} allows nothing else" if len(matching) == 1 else \
            f"no release of {name} within {wanted} can be installed: {why}"
    return ResolutionError(reason + hint,
                           fix=f"p2phost plugin install '{name}=={fitting.version}'" if fitting
                           else f"p2phost plugin info {name}")
