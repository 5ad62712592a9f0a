"""Record what a full ``plugin install --yes`` did, for :mod:`p2phost._replay` to do again.

Two kinds of install are recorded, each keyed by everything its decision rested on (see
:mod:`p2phost._replay`): one that built the plugin environment of a project that had none
(the generation's files, linked from which unpacked wheels, the lock it wrote and the
record of the files it was built from, ``installed.json``), and
one that found nothing to do. Nothing is recorded when the decision rested on anything
else: an answer a registry gave that was not kept (a 404, an unreachable registry,
``no-store``), pip's resolution of Python packages, a file its registry replaced, a
project, host or cache that changed while the install ran, or a generation that is not
exactly the wheels' files linked (another file system: they were copied).

A record only saves time: failing to write one never fails an install.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .. import _replay, _replay_key
from .._environment import built_record
from .._fileops import read_head
from .._revalidate import answer_entry
from ._unpacked import STAMPS, intact

if TYPE_CHECKING:
    from .._lock import Lock
    from ._installer import Installer
    from ._responses import ResponseCache

#: One line a command printed: (0 stdout or 1 stderr, the text without its newline).
Line = tuple[int, str]


def before() -> tuple[_replay_key.Snapshot, tuple[Any, ...]] | None:
    """The project here and the host before an install, as records are keyed (None when
    the replay cannot stand for it, or is off: then nothing is recorded)."""
    if not _replay.enabled():
        return None
    try:
        root = _replay_key.find_root(os.getcwd())
        return None if root is None else (_replay_key.snapshot(root), _replay_key.host_stamp())
    except Exception:  # only the full installer says what is wrong
        return None


def unchanged(start: tuple[_replay_key.Snapshot, tuple[Any, ...]]) -> bool:
    """Whether the project is still as :func:`before` saw it."""
    try:
        return _replay_key.snapshot(start[0][0]) == start[0]
    except Exception:  # read again by the full installer, which says what is wrong
        return False


def record(
    made: Installer, start: tuple[_replay_key.Snapshot, tuple[Any, ...]], output: list[Line]
) -> None:
    """Keep a record of the install ``made`` just finished, which started as ``start``
    (from :func:`before`) and printed ``output``, if a replay may stand for it."""
    try:
        found = _record(made, start, output)
    except Exception:  # a record only saves time
        return
    if found is not None:
        path, kept = found
        try:
            _replay.write_record(path, kept)
        except OSError:
            pass


def _record(
    made: Installer, start: tuple[_replay_key.Snapshot, tuple[Any, ...]], output: list[Line]
) -> tuple[str, dict[str, Any]] | None:
    snap, host = start
    responses = made.fetcher.responses
    if made.unrecordable or (responses is not None and responses.doubt):
        return None
    cache = os.path.normpath(str(made.cache.root))
    if _replay_key.cache_dir() != cache or snap[3] is False:
        return None
    answers = _answers(responses) if responses is not None else []
    after = _replay_key.snapshot(snap[0])
    if answers is None or after[1] != snap[1] or _replay_key.host_stamp() != host:
        return None
    kept: dict[str, Any] = {
        "key": _replay_key.key(snap, host),
        "answers": answers,
        "output": output,
    }
    if snap[3] is not None:  # the environment was there: only "nothing to do" is kept
        return (_replay_key.record_path(cache, snap, host), kept) if after == snap else None
    if not isinstance(after[3], tuple) or after[2] != made.lock.dumps().encode("utf-8"):
        return None
    generation, files = after[3]
    trees = _trees(cache, made.lock)
    if trees is None or _linked(trees) != files or os.sep in generation:
        return None
    built = built_record(generation, {f.name: f.sha256 for f in made.lock.files})
    kept.update(trees=trees, generation=generation, lock=after[2], built=built)
    return _replay_key.record_path(cache, snap, host), kept


def _answers(responses: ResponseCache) -> list[tuple[Any, ...]] | None:
    """(file, inode, size, mtime, received, max-age, age, key, ETag, bytes of the head
    line) of each kept answer this run used, as kept now; None when one is no longer the
    answer used, or is never fresh."""
    out = []
    for key, body in sorted(responses.served.items()):
        path = str(responses.path(key))
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            line = handle.readline()
            kept, etag, received, max_age, age = read_head(line)
            if kept != key or handle.read() != body:
                return None
        if max_age <= 0:
            return None
        out.append(answer_entry(path, info, received, max_age, age, key, etag, len(line)))
    return out


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _trees(cache: str, lock: Lock) -> list[tuple[Any, ...]] | None:
    """Per locked file, in the installer's linking order: its cached wheel and signature
    with their stamps, its unpacked tree and the tree's layout (directory, mtime, files
    with inode, size, mtime); None when a tree is not intact."""
    from pathlib import Path

    out = []
    for entry in lock.files:
        wheel = os.path.join(cache, "files", entry.sha256[:2], entry.sha256, entry.filename)
        tree = os.path.join(cache, "unpacked", entry.sha256[:2], entry.sha256)
        wheel_stamp = _stamp(wheel)
        if wheel_stamp is None or not intact(Path(tree)):
            return None
        layout = []
        for directory, dirs, files in os.walk(tree):
            dirs.sort()
            relative = os.path.relpath(directory, tree) if directory != tree else ""
            found = []
            for name in sorted(files):
                if directory == tree and name == STAMPS:
                    continue
                info = os.lstat(os.path.join(directory, name))
                found.append((name, info.st_ino, info.st_size, info.st_mtime_ns))
            layout.append((relative, os.stat(directory).st_mtime_ns, found))
        out.append((wheel, wheel_stamp, wheel + ".sig", _stamp(wheel + ".sig"), tree, layout))
    return out


def _linked(trees: list[tuple[Any, ...]]) -> tuple[tuple[str, int, int, int], ...]:
    """The files a generation linked from ``trees`` has, as ``_replay_key.file_stamps`` says."""
    files: dict[str, tuple[str, int, int, int]] = {}
    for *_, layout in trees:
        for relative, _, found in layout:
            for name, inode, size, mtime in found:
                if not name.endswith(".pyc"):
                    path = os.path.join(relative, name) if relative else name
                    files[path] = (path, inode, size, mtime)
    return tuple(sorted(files.values()))
