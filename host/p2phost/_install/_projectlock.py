"""The per-project lock: one plugin lifecycle command changes a project at a time.

An ``flock`` on ``.p2phost/install.lock`` (:func:`p2phost._fileops.lock_project`, which
the replay takes too); the OS drops it if the holder dies, so a SIGKILLed install never
leaves a project locked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import UserError
from .._fileops import lock_project
from .._project import Project
from ._errors import InstallError

#: How long to wait for another p2phost command working on the same project.
LOCK_WAIT = 30.0


@contextmanager
def exclusive(project: Project) -> Iterator[None]:
    """One lifecycle command per project at a time (the OS drops the lock if we die)."""
    try:
        handle = lock_project(str(project.state_dir), LOCK_WAIT)
    except OSError as exc:
        raise InstallError(f"cannot write {project.state_dir}: {exc.strerror}",
                           fix="fix the directory's permissions, then retry") from exc
    if handle is None:
        raise UserError(f"another p2phost command is changing the plugins of {project.root} "
                        f"(waited {LOCK_WAIT:g} s)", fix="wait for it to finish, then retry")
    with handle:
        yield
