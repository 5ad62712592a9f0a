"""Unpack a pure-Python wheel into a directory, refusing anything that escapes it.

The expansion is bounded before anything is written: the members' declared sizes must fit
the cap (and no member may claim an absurd compression ratio), and while unpacking the
bytes actually written are counted against the same cap, since a ZIP header can lie.
"""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ._errors import UserError

if TYPE_CHECKING:
    import zipfile

#: A wheel may unpack to at most this many times its own size ...
MAX_RATIO = 100
#: ... or to this much, whichever is larger ...
RATIO_FLOOR = 64 * 1024 * 1024
#: ... and never to more than this.
MAX_UNPACKED = 2 * 1024 * 1024 * 1024
_CHUNK = 1 << 16


class WheelError(UserError):
    """A wheel is malformed or unsafe to unpack."""


def unpack_cap(size: int) -> int:
    """How many bytes a wheel of ``size`` bytes may unpack to."""
    return min(MAX_UNPACKED, max(size * MAX_RATIO, RATIO_FLOOR))


def _bomb(name: str, amount: int, cap: int) -> WheelError:
    return WheelError(
        f"{name}: unpacks to more than {cap} bytes ({amount}); refusing what looks like a "
        "decompression bomb",
        fix="install a wheel from a source you trust, or ask its publisher to rebuild it",
    )


def check_wheel(wheel: zipfile.ZipFile, name: str, cap: int = MAX_UNPACKED
                ) -> list[zipfile.ZipInfo]:
    """The members of ``wheel``, after refusing absolute paths, ``..``, symlinks, a member
    twice and a declared expansion over ``cap``."""
    members = wheel.infolist()
    seen: set[str] = set()
    declared = 0
    for info in members:
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
            raise WheelError(f"{name}: refusing path outside the wheel: {info.filename!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise WheelError(f"{name}: refusing symlink in wheel: {info.filename!r}")
        if info.filename in seen:
            raise WheelError(f"{name}: {info.filename!r} is in the wheel twice; refusing it")
        seen.add(info.filename)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(
                info.compress_size, 1):
            raise _bomb(name, info.file_size, cap)
        declared += info.file_size
        if declared > cap:
            raise _bomb(name, declared, cap)
    return members


def unpack_wheel(wheel_path: Path, target: Path) -> None:
    """Unpack ``wheel_path`` into ``target`` the way ``pip install --target`` lays it out.

    Only the purelib/platlib layout is supported: ``*.data/purelib`` and
    ``*.data/platlib`` contents are moved to the top; other ``.data`` schemes
    (scripts, headers) are not installed into a plugin environment.
    """
    import zipfile  # only when a wheel is unpacked (once, into the download cache)

    cap = unpack_cap(wheel_path.stat().st_size)
    written = 0
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for info in check_wheel(wheel, wheel_path.name, cap):
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
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > cap:
                            raise _bomb(wheel_path.name, written, cap)
                        out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise WheelError(f"{wheel_path.name}: not a wheel (bad zip file: {exc})") from exc
