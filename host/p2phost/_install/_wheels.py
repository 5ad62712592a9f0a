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
            requirement = Requirement(line)
        except InvalidRequirement:
            raise IntegrityError(f"{wheel.name}: bad Requires-Dist {line!r}") from None
        if canonicalize_name(requirement.name) not in HOST_DISTRIBUTIONS:
            out.append(str(requirement))
    return tuple(out)
