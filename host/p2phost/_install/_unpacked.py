"""Wheels unpacked once into the download cache; generations hard-link their files.

A verified wheel is unpacked into ``CACHE/unpacked/ab/SHA256/`` (aside, then renamed into
place, so a killed unpack leaves no half tree where a complete one is looked for), its
files made read-only. Building a generation then links each file instead of extracting
the wheel again: no decompression and no copy, as uv does on Linux. Where the cache and
the project are on different file systems (or links are refused) the files are copied.

The links share their file with the cache: a plugin that writes to its own installed
files changes them in the cache too. They are read-only, but that stops neither root nor
a plugin that makes a file writable first; so each tree's ``.p2phost-stamps.json`` holds
each file's size and modification time as unpacked, and a tree whose files differ (one
written through a link, or lost: a cache cleaned by hand) is unpacked again from its
verified wheel before it is linked, never linked as it is. The directories are the
generation's own, so ``__pycache__`` is written there as before.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from .._fileops import link_files
from .._wheel import unpack_wheel
from ._errors import InstallError

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
#: In each tree's top directory (never linked): every file's size and mtime as unpacked.
STAMPS = ".p2phost-stamps.json"


def unpacked(root: Path, sha256: str, wheel: Path) -> Path:
    """The tree of ``wheel`` (whose sha256 is ``sha256``, already verified) under ``root``,
    unpacked now if it is not there yet, or again if its files changed since."""
    tree = root / "unpacked" / sha256[:2] / sha256
    if tree.is_dir():
        if intact(tree):
            return tree
        shutil.rmtree(tree, ignore_errors=True)  # changed or lost files: unpack afresh
    part = tree.with_name(f"{sha256}.{os.getpid()}.part")
    _drop_abandoned(tree.parent, sha256)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        unpack_wheel(wheel, part)
        stamps = {}
        for directory, _, files in os.walk(part):
            for name in files:
                path = os.path.join(directory, name)
                os.chmod(path, _READ_ONLY)
                stamps[path[len(str(part)) + 1:]] = _stamp(os.stat(path))
        (part / STAMPS).write_text(json.dumps(stamps))  # renamed with the tree
        try:
            part.rename(tree)
        except OSError:
            if not (tree.is_dir() and intact(tree)):  # else another install unpacked it
                raise                                    # first: use theirs
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


def _stamp(info: os.stat_result) -> list[int]:
    """What a write changes: size and modification time (not ctime: linking changes it)."""
    return [info.st_size, info.st_mtime_ns]


def intact(tree: Path) -> bool:
    """Whether every file of ``tree`` has the size and mtime it was unpacked with, and
    no file was added or lost."""
    try:
        expected = json.loads((tree / STAMPS).read_text())
        base = len(str(tree)) + 1
        found = {path[base:]: _stamp(os.stat(path))
                 for directory, _, files in os.walk(tree) for name in files
                 if (path := os.path.join(directory, name)) != str(tree / STAMPS)}
    except (OSError, ValueError):
        return False
    return bool(found == expected)


def link_wheel(root: Path, sha256: str, wheel: Path, target: Path) -> None:
    """Put the files of ``wheel`` (verified, sha256 ``sha256``) into ``target``, linked from
    its tree under ``root`` (checked intact first)."""
    link_tree(unpacked(root, sha256, wheel), target)


def link_tree(tree: Path, target: Path) -> None:
    """Hard-link every file of ``tree`` into ``target`` (copying where links fail); a file
    already there (two wheels with one path) is replaced, as unpacking over it would."""
    copy = False
    top = str(tree)
    for directory, _, files in os.walk(top):
        names = [n for n in files if n != STAMPS] if directory == top else files
        copy = link_files(directory, str(target) + directory[len(top):], names, copy=copy)
