"""Wheels unpacked once into the download cache; generations hard-link their files.

A verified wheel is unpacked into ``CACHE/unpacked/ab/SHA256/`` (aside, then renamed into
place, so a killed unpack leaves no half tree where a complete one is looked for), its
files made read-only. Building a generation then links each file instead of extracting
the wheel again: no decompression and no copy, as uv does on Linux. Where the cache and
the project are on different file systems (or links are refused) the files are copied.

The links share their file with the cache: a plugin that writes to its own installed
files would change them for every project. That is why they are read-only; the
directories are the generation's own, so ``__pycache__`` is written there as before.
Beside each tree, ``SHA256.files`` holds how many files it has: a tree that lost one (a
cache cleaned by hand) is unpacked again rather than linked short.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .._wheel import unpack_wheel
from ._errors import InstallError

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def unpacked(root: Path, sha256: str, wheel: Path) -> Path:
    """The tree of ``wheel`` (whose sha256 is ``sha256``, already verified) under ``root``,
    unpacked now if it is not there yet."""
    tree = root / "unpacked" / sha256[:2] / sha256
    if tree.is_dir():
        return tree
    part = tree.with_name(f"{sha256}.{os.getpid()}.part")
    _drop_abandoned(tree.parent, sha256)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        unpack_wheel(wheel, part)
        count = 0
        for directory, _, files in os.walk(part):
            for name in files:
                os.chmod(os.path.join(directory, name), _READ_ONLY)
                count += 1
        _count_file(tree).write_text(str(count))
        try:
            part.rename(tree)
        except OSError:
            if not tree.is_dir():  # else another install unpacked it first: use theirs
                raise
    except OSError as exc:
        raise InstallError(f"cannot unpack {wheel.name} into the download cache {root}: "
                           f"{exc.strerror or exc}; nothing was changed",
                           fix="free disk space or set P2PHOST_CACHE_DIR to a writable "
                               "directory, then retry") from exc
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return tree


def _drop_abandoned(parent: Path, sha256: str) -> None:
    """Remove the half trees of this wheel left by installs that died while unpacking (and
    one of ours: the same pid again). Another live process's is left alone."""
    for part in parent.glob(f"{sha256}.*.part") if parent.is_dir() else ():
        pid = part.name[len(sha256) + 1:-len(".part")]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # still unpacking
            except ProcessLookupError:
                pass
            except OSError:  # alive, someone else's
                continue
        shutil.rmtree(part, ignore_errors=True)


def _count_file(tree: Path) -> Path:
    return tree.with_name(tree.name + ".files")


def link_wheel(root: Path, sha256: str, wheel: Path, target: Path) -> None:
    """Put the files of ``wheel`` (verified, sha256 ``sha256``) into ``target``, linked from
    its tree under ``root``."""
    tree = unpacked(root, sha256, wheel)
    try:
        expected = int(_count_file(tree).read_text())
    except (OSError, ValueError):
        expected = -1
    if link_tree(tree, target) != expected:  # files lost from the cache: unpack afresh
        shutil.rmtree(tree, ignore_errors=True)
        link_tree(unpacked(root, sha256, wheel), target)


def link_tree(tree: Path, target: Path) -> int:
    """Hard-link every file of ``tree`` into ``target`` (copying where links fail); a file
    already there (two wheels with one path) is replaced, as unpacking over it would.
    Returns how many files there were."""
    copy, count = False, 0
    base = len(str(tree))
    for directory, _, files in os.walk(tree):
        into = str(target) + directory[base:]
        os.makedirs(into, exist_ok=True)
        for name in files:
            count += 1
            source, dest = os.path.join(directory, name), os.path.join(into, name)
            if os.path.lexists(dest):
                os.unlink(dest)
            if not copy:
                try:
                    os.link(source, dest)
                    continue
                except OSError:  # another file system, or links refused: copy from now on
                    copy = True
            shutil.copyfile(source, dest)
    return count
