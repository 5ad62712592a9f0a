"""What the full installer (:mod:`p2phost._install`) and its replay (:mod:`p2phost._replay`)
both do to files, written once so that both do it alike: take the project lock, link the
files of an unpacked wheel into a generation, switch ``.p2phost/env/current`` to it, and
replace a file atomically (``p2phost.lock``, a kept answer, a replay record). The head
line of a kept registry answer, which both write, is :mod:`p2phost._revalidate`'s.

The replay must stay light: this imports only ``os`` and ``time``, and when used ``fcntl``
(to lock) and ``shutil`` (to copy where links fail, which the replay never does).
"""

from __future__ import annotations

import os
import time

# Not typing.TYPE_CHECKING: importing typing costs more than a replay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import IO

#: The project lock's file in the project's state directory (``.p2phost``).
LOCK_FILE = "install.lock"


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

