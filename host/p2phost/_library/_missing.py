"""Where a program without a project gets a plugin its manifest mapping declares.

Its plugins come from its state directory's ``.p2phost/`` (``p2phost plugin install`` there)
or from the program's own environment. The fix names only sources that hold the plugin:
an official plugin's own signed wheel in the built-in source, or the distribution
``p2phost.lock`` recorded; never a bare ``pip install p2phost-NAME``, which a wheel-only
install cannot satisfy and which, against a public index, installs whatever is published
under that name (a third party's plugin is not called ``p2phost-NAME`` anyway).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .._errors import UserError
from .._lock import Lock
from .._project import Project

if TYPE_CHECKING:
    from .._install import BuiltinSource


def missing_plugin_fix(project: Project, name: str) -> str:
    """The fix for plugin ``name``, declared by ``project`` (a state directory) but not
    installed there nor in this program's environment."""
    from .._install import BuiltinSource

    # Quoted: these are commands to paste, and a state directory's path may hold spaces.
    root = shlex.quote(str(project.root))
    here = f"cd {root} && p2phost plugin install --yes"
    builtin = BuiltinSource.find()
    official = _official_wheel(builtin, name) if builtin is not None else None
    if official is not None:
        wheels, wheel = shlex.quote(str(official.parent)), shlex.quote(str(official))
        return (f"{here} (from the official plugins built into p2phost), or into this "
                f"program's environment: pip install --find-links {wheels} {wheel}")
    try:
        locked = Lock.load(project.lock_path).plugin(name)
    except (UserError, OSError):  # (a lock it cannot read names nothing: the plugin's
        # own error is the one to show)
        locked = None
    if locked is not None:
        return (f"cd {root} && p2phost plugin sync (p2phost.lock pins "
                f"{_distribution(locked.filename) or name} {locked.version} from "
                f"{locked.source}), or install that distribution into this program's "
                "environment from there")
    what = (f"{name} is not an official plugin: install the distribution that provides it "
            "into this program's environment from where it came (its author's wheel or "
            f"index), or {here} when a registry in the manifest has it")
    if builtin is not None:  # it has every official plugin: this one is not
        return what
    # A development install: the official plugins' wheels are where scripts/dist puts them.
    return (f"{here} (with P2PHOST_BUILTIN_DIR=dist/plugins after scripts/dist, or a "
            f"registry), or install the distribution that provides {name} into this "
            "program's environment from where it came")


def _official_wheel(source: BuiltinSource, name: str) -> Path | None:
    """The newest intact wheel of plugin ``name`` in the built-in source, if it has one."""
    try:
        info = source.plugin(name)
    except UserError:  # a wheel changed after signing: never offered
        return None
    if info is None or not info.releases or not info.releases[0].files:
        return None
    return source.file(info.releases[0].files[0].filename)


def _distribution(filename: str) -> str | None:
    """The distribution a wheel's file name names (``p2phost_gossip-1.0-...``:
    ``p2phost-gossip``)."""
    try:
        return str(parse_wheel_filename(filename)[0])
    except InvalidWheelFilename:
        return None
