"""The per-project lock: one plugin lifecycle command changes a project at a time.

An ``flock`` on ``.p2phost/install.lock``; the OS drops it if the holder dies, so a
SIGKILLed install never leaves a project locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import UserError
from .._project import Project
from ._errors import InstallError

#: How long to wait for another p2phost command working on the same project.
LOCK_WAIT = 30.0


@contextmanager
def exclusive(project: Project) -> Iterator[None]:
    """One lifecycle command per project at a time (the OS drops the lock if we die)."""
    try:
        project.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(project.state_dir / "install.lock", "a+")
    except OSError as exc:
        raise InstallError(f"cannot write {project.state_dir}: {exc.strerror}",
                           fix="fix the directory's permissions, then retry") from exc
    with handle:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"another p2phost command is changing the plugins of "
                        f"{project.root} (waited {LOCK_WAIT:g} s)",
                        fix="wait for it to finish, then retry") from None
                time.sleep(0.1)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield
