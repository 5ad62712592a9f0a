"""Wheel file names and metadata: which wheels fit this interpreter, what they require."""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from p2phost_sdk import normalize_name
from p2phost_sdk.core_metadata import header_values

from ._errors import IntegrityError

if TYPE_CHECKING:
    from packaging.requirements import Requirement

#: Provided by the host to every plugin: never installed into a plugin environment.
HOST_DISTRIBUTIONS = frozenset({"p2phost", "p2phost-sdk"})
#: The distribution plugins depend on, with the range of their host-api.
SDK_DISTRIBUTION = "p2phost-sdk"
_PURE = ("py3-none-any", "py2.py3-none-any")
#: Most bytes of a wheel's METADATA read (the registry refuses uploads over this too).
MAX_METADATA = 1024 * 1024


#: ``NAME OP VERSION[, OP VERSION]...`` and nothing else (no extras, marker or URL): how
#: every plugin requires p2phost-sdk.
_PLAIN_REQUIREMENT = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*"
    r"((?:~=|==|!=|<=|>=|<|>|===)\s*[A-Za-z0-9_.*+!-]+"
    r"(?:\s*,\s*(?:~=|==|!=|<=|>=|<|>|===)\s*[A-Za-z0-9_.*+!-]+)*)?\s*$")


@cache
def _supported() -> frozenset[object]:
    # packaging.tags costs ~25 ms to import: only paid for wheels that are not pure Python.
    from packaging.tags import sys_tags

    return frozenset(sys_tags())


def wheel_fits(filename: str) -> bool:
    """Whether this interpreter can install the wheel called ``filename``."""
    if filename.endswith(tuple(f"-{tag}.whl" for tag in _PURE)):
        return True
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return not _supported().isdisjoint(tags)


def python_requirements(wheel: Path) -> tuple[str, ...]:
    """The wheel's own ``Requires-Dist`` lines, without the host's distributions."""
    plain = _plain_requirements(wheel)
    if plain is not None and all(name in HOST_DISTRIBUTIONS for name, _ in plain):
        return ()
    return tuple(str(r) for r in _requirements(wheel)
                 if normalize_name(r.name) not in HOST_DISTRIBUTIONS)


def check_sdk(name: str, version: str, wheel: Path) -> None:
    """Refuse a plugin whose ``p2phost-sdk`` requirement this host's SDK does not meet."""
    have = _installed_sdk()
    if have is None:  # a source tree on sys.path: HOST_API is checked anyway
        return
    for required, specifier, marker in _sdk_requirements(wheel):
        if required != SDK_DISTRIBUTION or marker:
            continue
        if not specifier.contains(have, prereleases=True):
            raise IntegrityError(
                f"{name} {version} needs {SDK_DISTRIBUTION}{specifier}, but this "
                f"host has {SDK_DISTRIBUTION} {have}; nothing was installed",
                fix=f"upgrade p2phost (pip install -U p2phost), or install an older {name}: "
                    f"p2phost plugin install '{name}<{version}'")


@cache
def _installed_sdk() -> str | None:
    """The installed p2phost-sdk's version, from its ``NAME-VERSION.dist-info`` directory's
    name (importlib.metadata reads it from METADATA with the email package: ~10 ms)."""
    prefix = SDK_DISTRIBUTION.replace("-", "_") + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for found in names:
            if found.startswith(prefix) and found.endswith(".dist-info"):
                return found[len(prefix):-len(".dist-info")]
    return None


def _sdk_requirements(wheel: Path) -> list[tuple[str, SpecifierSet, bool]]:
    """(name, specifier, has a marker) of each ``Requires-Dist`` line naming a host
    distribution."""
    plain = _plain_requirements(wheel)
    if plain is not None:
        return [(name, specifier, False) for name, specifier in plain
                if name in HOST_DISTRIBUTIONS]
    return [(normalize_name(r.name), r.specifier, r.marker is not None)
            for r in _requirements(wheel) if normalize_name(r.name) in HOST_DISTRIBUTIONS]


@cache
def _plain_requirements(wheel: Path) -> list[tuple[str, SpecifierSet]] | None:
    """(normalised name, specifier) of each ``Requires-Dist`` line, when every line is a
    plain ``NAME SPECIFIER`` (as plugins require p2phost-sdk); else None, and the caller
    parses them in full. packaging.requirements, with its marker and tag machinery, costs
    more to load than the rest of a warm-cache install."""
    out = []
    for line in _requires_dist(wheel):
        match = _PLAIN_REQUIREMENT.match(line)
        if match is None:
            return None
        try:
            out.append((normalize_name(match.group(1)), SpecifierSet(match.group(2) or "")))
        except InvalidSpecifier:
            return None  # the full parse says what is wrong
    return out


def _metadata_text(data: bytes, where: str) -> str:
    """A METADATA read up to one byte over ``MAX_METADATA``: refused when it is over."""
    if len(data) > MAX_METADATA:
        raise IntegrityError(
            f"{where} is over {MAX_METADATA} bytes; refusing to read it",
            fix="install a wheel from a source you trust, or ask its publisher to rebuild it")
    return data.decode("utf-8")


@cache
def _requires_dist(wheel: Path) -> tuple[str, ...]:
    """The ``Requires-Dist`` lines of ``wheel``: a wheel file, or its unpacked tree."""
    if wheel.is_dir():
        found = list(wheel.glob("*.dist-info/METADATA"))
        if len(found) != 1:
            raise IntegrityError(f"{wheel.name}: expected one .dist-info/METADATA")
        try:
            with open(found[0], "rb") as member:
                text = _metadata_text(member.read(MAX_METADATA + 1),
                                      f"{found[0].parent.name}/METADATA")
            return header_values(text, "Requires-Dist")
        except (OSError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{wheel.name}: unreadable metadata ({exc})") from exc
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as archive:
            infos = [n for n in archive.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(infos) != 1:
                raise IntegrityError(f"{wheel.name}: expected one .dist-info/METADATA")
            with archive.open(infos[0]) as member:
                text = _metadata_text(member.read(MAX_METADATA + 1), f"{wheel.name}: {infos[0]}")
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{wheel.name}: not a readable wheel ({exc})") from exc
    return header_values(text, "Requires-Dist")


@cache
def _requirements(wheel: Path) -> tuple[Requirement, ...]:
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in _requires_dist(wheel):
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            raise IntegrityError(f"{wheel.name}: bad Requires-Dist {line!r}") from None
    return tuple(out)
