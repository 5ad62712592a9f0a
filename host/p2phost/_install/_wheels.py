"""Wheel file names and metadata: which wheels fit this interpreter, what they require."""

from __future__ import annotations

import zipfile
from email.parser import HeaderParser
from functools import cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from ._errors import IntegrityError

#: Provided by the host to every plugin: never installed into a plugin environment.
HOST_DISTRIBUTIONS = frozenset({"p2phost", "p2phost-sdk"})
#: The distribution plugins depend on, with the range of their host-api.
SDK_DISTRIBUTION = "p2phost-sdk"
_PURE = ("py3-none-any", "py2.py3-none-any")


@cache
def _supported() -> frozenset[object]:
    # packaging.tags costs ~25 ms to import: only paid for wheels that are not pure Python.
    from packaging.tags import sys_tags

    return frozenset(sys_tags())


def wheel_fits(filename: str) -> bool:
    """Whether this interpreter can install the wheel called ``filename``."""
    if filename.endswith(tuple(f"-{tag}.whl" for tag in _PURE)):
        return True
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return not _supported().isdisjoint(tags)


def python_requirements(wheel: Path) -> tuple[str, ...]:
    """The wheel's own ``Requires-Dist`` lines, without the host's distributions."""
    return tuple(str(r) for r in _requirements(wheel)
                 if canonicalize_name(r.name) not in HOST_DISTRIBUTIONS)


def check_sdk(name: str, version: str, wheel: Path) -> None:
    """Refuse a plugin whose ``p2phost-sdk`` requirement this host's SDK does not meet."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        have = installed_version(SDK_DISTRIBUTION)
    except PackageNotFoundError:  # a source tree on sys.path: HOST_API is checked anyway
        return
    for requirement in _requirements(wheel):
        if canonicalize_name(requirement.name) != SDK_DISTRIBUTION or requirement.marker:
            continue
        if not requirement.specifier.contains(have, prereleases=True):
            raise IntegrityError(
                f"{name} {version} needs {SDK_DISTRIBUTION}{requirement.specifier}, but this "
                f"host has {SDK_DISTRIBUTION} {have}; nothing was installed",
                fix=f"upgrade p2phost (pip install -U p2phost), or install an older {name}: "
                    f"p2phost plugin install '{name}<{version}'")


@cache
def _requirements(wheel: Path) -> tuple[Requirement, ...]:
    try:
        with zipfile.ZipFile(wheel) as archive:
            infos = [n for n in archive.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(infos) != 1:
                raise IntegrityError(f"{wheel.name}: expected one .dist-info/METADATA")
            metadata = HeaderParser().parsestr(archive.read(infos[0]).decode("utf-8"))
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{wheel.name}: not a readable wheel ({exc})") from exc
    out = []
    for line in metadata.get_all("Requires-Dist") or []:
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            raise IntegrityError(f"{wheel.name}: bad Requires-Dist {line!r}") from None
    return tuple(out)
