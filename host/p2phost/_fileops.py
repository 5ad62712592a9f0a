"""What the full installer (:mod:`p2phost._install`) and its replay (:mod:`p2phost._replay`)
both do to files, written once so that both do it alike: take the project lock, link the
files of an unpacked wheel into a generation, switch ``.p2phost/env/current`` to it,
replace a file atomically (``p2phost.lock``, ``installed.json``, a kept answer, a replay
record), and write and read the head line of a kept registry answer; and with them
:func:`build_recorded`, the replay's building of the generation a record holds.

The replay must stay light (and a build import no module more than it needs): this
imports only ``os`` and ``time``, and when used ``fcntl`` (to lock), ``json`` (to read a
head line) and ``shutil`` (to copy where links fail); the replay never reads a head line
nor copies.
"""

from __future__ import annotations

import os
import time

# Not typing.TYPE_CHECKING: importing typing costs more than a replay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import IO, Any

    from ._replay_key import Snapshot

#: The project lock's file in the project's state directory (``.p2phost``).
LOCK_FILE = "install.lock"
#: Beside ``env/``: which generation was built last, from which files (sha256 per
#: distribution), so ``doctor`` and ``run --check`` can tell a lock edited since. Written
#: by the installer (``PluginEnvironment.remember``) and by a replayed build alike.
BUILT_FILE = "installed.json"


def lock_project(state_dir: str, wait: float) -> IO[str] | None:
    """Take the project lock: an ``flock`` on ``state_dir/install.lock`` (the OS drops it
    if the holder dies, so a SIGKILLed install never leaves a project locked), waiting up
    to ``wait`` seconds for another command to let go of it. The open file, which holds
    the lock until it is closed, with this process's id in it; None when another command
    held it all along. OSError when the directory cannot be written."""
    import fcntl

    os.makedirs(state_dir, exist_ok=True)
    handle = open(os.path.join(state_dir, LOCK_FILE), "a+")
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return None
                time.sleep(0.1)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


def link_files(source: str, into: str, names: Iterable[str], *, copy: bool = False,
               fall_back: bool = True) -> bool:
    """Hard-link the files ``names`` of directory ``source`` into ``into`` (made if
    missing); a file already there (two wheels with one path) is replaced, as unpacking
    over it would. With ``copy`` (links failed before) they are copied, and so are the
    rest once a link fails (another file system, or links refused) if ``fall_back``;
    else that OSError is raised. Returns whether files are being copied now."""
    os.makedirs(into, exist_ok=True)
    for name in names:
        # Plain names (os.walk's, a record's): no os.path.join per file on the replay's path.
        path, dest = f"{source}/{name}", f"{into}/{name}"
        if os.path.lexists(dest):
            os.unlink(dest)
        if not copy:
            try:
                os.link(path, dest)
                continue
            except OSError:
                if not fall_back:
                    raise
                copy = True
        import shutil

        shutil.copyfile(path, dest)
    return copy


def switch(env_dir: str, generation: str) -> None:
    """Make ``generation`` (a directory in ``env_dir``) the active one in one atomic step:
    a new symlink renamed over ``env_dir/current``, so a crash at any moment leaves the
    old or the new generation active."""
    link = os.path.join(env_dir, f".current-{os.getpid()}")
    if os.path.lexists(link):  # left by a process of the same id that was killed
        os.unlink(link)
    os.symlink(generation, link)
    os.replace(link, os.path.join(env_dir, "current"))


def replace_file(path: str, data: bytes, mode: int = 0o666) -> os.stat_result:
    """Write ``data`` to ``path`` atomically (a reader, or what a crash leaves, is the old
    file or the new, never half of one), created with ``mode`` (less the umask); the
    written file's stat."""
    head, name = os.path.split(path)
    part = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    try:
        with open(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as out:
            out.write(data)
            out.flush()
            info = os.fstat(out.fileno())
        os.replace(part, path)
    finally:
        if os.path.lexists(part):
            os.unlink(part)
    return info


def _json_string(text: str) -> str:
    # JSON (RFC 8259) in ASCII, as json.dumps writes it, without importing json.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # URLs and ETags: no escape, no loop per character
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        elif ord(char) > 0xFFFF:
            code = ord(char) - 0x10000
            out.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return '"' + "".join(out) + '"'


def head_line(key: str, etag: str | None, received: float, max_age: float,
              age: float) -> bytes:
    """The first line of a kept registry answer (``_install._responses``, and
    ``_revalidate`` after a 304): a line of JSON with its key (Accept and URL), ETag, when
    it was received, its freshness and ``Age``; the body follows as sent."""
    tag = "null" if etag is None else _json_string(etag)
    return (f'{{"key": {_json_string(key)}, "etag": {tag}, "received": {float(received)!r}, '
            f'"max_age": {float(max_age)!r}, "age": {float(age)!r}}}\n').encode("ascii")


def read_head(line: bytes) -> tuple[str, str | None, float, float, float]:
    """(key, ETag, received, max-age, age) of a kept answer's :func:`head_line`; ValueError,
    KeyError, TypeError or AttributeError when it is not one."""
    import json

    head = json.loads(line)
    return (head["key"], head.get("etag"), float(head["received"]), float(head["max_age"]),
            float(head.get("age", 0.0)))


# The replay: the generation a record holds, built with the operations above (its keys,
# _replay_key, imported when called: the installer imports this module without them).


def _same(path: str, stamp: tuple[int, ...] | None) -> None:
    """Doubt unless ``path`` is the file recorded (inode, size, mtime, ctime), or is
    absent as recorded."""
    from ._replay_key import Doubt

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
    from ._replay_key import Doubt

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


def build_recorded(record: dict[str, Any], snap: Snapshot) -> bool:
    """Build the recorded generation, switch to it, record the files it was built from
    and write the recorded lock, in the full installer's order and under its project
    lock; False (nothing changed) when the project changed meanwhile or another command
    holds it."""
    from ._replay_key import LOCK, STATE, snapshot

    root = snap[0]
    built = record["built"]  # read before anything changes: a record without it is no build
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
        try:
            replace_file(os.path.join(state, BUILT_FILE), built)
        except OSError:
            pass  # only a hint for checks, as the installer's (PluginEnvironment.remember)
        replace_file(os.path.join(root, LOCK), record["lock"])
    return True
