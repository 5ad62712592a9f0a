"""Unpack a pure-Python wheel into a directory, refusing anything that escapes it."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from ._errors import UserError


class WheelError(UserError):
    """A wheel is malformed or unsafe to unpack."""


def check_wheel(wheel: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    """The members of ``wheel``, after refusing absolute paths, ``..`` and symlinks."""
    members = wheel.infolist()
    for info in members:
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
            raise WheelError(f"{name}: refusing path outside the wheel: {info.filename!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise WheelError(f"{name}: refusing symlink in wheel: {info.filename!r}")
    return members


def unpack_wheel(wheel_path: Path, target: Path) -> None:
    """Unpack ``wheel_path`` into ``target`` the way ``pip install --target`` lays it out.

    Only the purelib/platlib layout is supported: ``*.data/purelib`` and
    ``*.data/platlib`` contents are moved to the top; other ``.data`` schemes
    (scripts, headers) are not installed into a plugin environment.
    """
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for info in check_wheel(wheel, wheel_path.name):
                parts = PurePosixPath(info.filename).parts
                if parts and parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue
                    parts = parts[2:]
                dest = target.joinpath(*parts)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(info) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 16):
                        out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise WheelError(f"{wheel_path.name}: not a wheel (bad zip file: {exc})") from exc
