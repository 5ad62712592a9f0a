"""Building the generation a replay record (:mod:`p2phost._replay`) holds: linking the
files of the recorded unpacked wheels into a new ``.p2phost/env`` generation, each checked
as recorded, then switching to it and writing the recorded lock, under the project lock
as the full installer does (``_install``), with its file operations
(:mod:`p2phost._fileops`). Imports only ``os`` (and ``fcntl``, through that module).
"""

from __future__ import annotations

import os

from ._fileops import link_files, lock_project, replace_file, switch
from ._replay_key import LOCK, STATE, Doubt, snapshot

# Not typing.TYPE_CHECKING: importing typing costs more than a replay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._replay_key import Snapshot


def _same(path: str, stamp: tuple[int, ...] | None) -> None:
    """Doubt unless ``path`` is the file recorded (inode, size, mtime, ctime), or is
    absent as recorded."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if stamp is None:
            return
        raise Doubt(path) from None
    if (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns) != stamp:
        raise Doubt(path)


def _link_trees(trees: list[tuple[Any, ...]], staged: str) -> None:
    """Link every recorded file of every tree into ``staged``, in the installer's order
    (a later wheel's file replaces an earlier one's), checking each as recorded."""
    for wheel, wheel_stamp, signature, signature_stamp, tree, layout in trees:
        _same(wheel, wheel_stamp)
        _same(signature, signature_stamp)
        for relative, mtime, files in layout:
            source = os.path.join(tree, relative) if relative else tree
            if os.stat(source).st_mtime_ns != mtime:
                raise Doubt(source)
            for name, inode, size, file_mtime in files:
                path = f"{source}/{name}"  # a plain name: os.path.join costs more
                info = os.stat(path)
                if (info.st_ino, info.st_size, info.st_mtime_ns) != (inode, size, file_mtime):
                    raise Doubt(path)
            # Never copied: the record holds a generation of links (_install._record).
            link_files(source, os.path.join(staged, relative) if relative else staged,
                       [name for name, *_ in files], fall_back=False)


def _remove(top: str) -> None:
    """Remove the directory tree ``top`` that a replay made (no symlinks in it)."""
    for directory, dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.unlink(os.path.join(directory, name))
        for name in dirs:
            os.rmdir(os.path.join(directory, name))
    os.rmdir(top)


def build(record: dict[str, Any], snap: Snapshot) -> bool:
    """Build the recorded generation, switch to it and write the recorded lock, in the
    full installer's order and under its project lock; False (nothing changed) when the
    project changed meanwhile or another command holds it."""
    root = snap[0]
    state = os.path.join(root, STATE)
    handle = lock_project(state, 0.0)
    if handle is None:
        return False  # the full installer waits for it
    with handle:
        if snapshot(root) != snap:
            return False
        envdir = os.path.join(state, "env")
        os.mkdir(envdir)
        try:
            staged = os.path.join(envdir, record["generation"])
            os.mkdir(staged)
            _link_trees(record["trees"], staged)
        except BaseException:
            _remove(envdir)  # as the installer drops a generation it could not stage
            raise
        switch(envdir, record["generation"])
        replace_file(os.path.join(root, LOCK), record["lock"])
    return True
