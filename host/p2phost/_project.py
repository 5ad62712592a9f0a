"""A p2phost project: the directory holding ``p2phost.toml`` and its ``.p2phost/`` state."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ._environment import PluginEnvironment
from ._errors import ProjectNotFound
from ._lock import LOCK_NAME
from ._manifest import MANIFEST_NAME, Manifest

if TYPE_CHECKING:
    from p2phost_sdk import Identity

STATE_DIR_NAME = ".p2phost"
IDENTITY_FILE = "identity.key"
#: The first line of the p2phost.toml a program's ``open_node(manifest=...)`` writes; the
#: next names the program (see :attr:`Project.start`).
PROGRAM_HEADER = ("# Written by p2phost.open_node(manifest=...) of the program below, which "
                  "runs this node with its handlers: edit its mapping, not this file.\n")
PROGRAM_LINE = "# program: "
#: sun_path is 108 bytes on Linux (104 on the BSDs and macOS), the terminating NUL included.
CONTROL_PATH_MAX = 103


def runtime_dir() -> Path:
    """The user's private directory for the control sockets of deep projects:
    ``$XDG_RUNTIME_DIR/p2phost`` when that is short, else ``/tmp/p2phost-UID``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/") and len(os.fsencode(xdg)) <= 40:
        return Path(xdg) / "p2phost"
    return Path("/tmp") / f"p2phost-{os.getuid()}"


@dataclass
class Project:
    """One project on disk. Cheap to create; reads files only when asked."""

    root: Path

    @classmethod
    def find(cls, start: Path | None = None) -> Project:
        """The project holding ``start`` (default: the working directory) or a parent."""
        here = (start or Path.cwd()).resolve()
        for directory in (here, *here.parents):
            if (directory / MANIFEST_NAME).is_file():
                return cls(directory)
        raise ProjectNotFound(f"no {MANIFEST_NAME} in {here} or any parent directory",
                              fix="p2phost init")

    @property
    def manifest_path(self) -> Path:
        """``p2phost.toml``."""
        return self.root / MANIFEST_NAME

    @property
    def start(self) -> str:
        """How to start this project's node, for a fix: ``p2phost run``, or the program
        whose ``open_node(manifest=...)`` wrote its p2phost.toml (``p2phost run`` would
        run none of that program's handlers)."""
        try:
            with self.manifest_path.open(encoding="utf-8") as manifest:
                header, line = manifest.readline(), manifest.readline()
        except (OSError, UnicodeDecodeError):
            header = line = ""
        if header != PROGRAM_HEADER or not line.startswith(PROGRAM_LINE):
            return "`p2phost run`"
        return (f"its program, {line.removeprefix(PROGRAM_LINE).strip()}: it opens this node "
                "with its handlers, which `p2phost run` would not run")

    @property
    def lock_path(self) -> Path:
        """``p2phost.lock``."""
        return self.root / LOCK_NAME

    @property
    def state_dir(self) -> Path:
        """``.p2phost/``: plugins, identity, runtime state."""
        return self.root / STATE_DIR_NAME

    @property
    def control_socket(self) -> Path:
        """The running node's local control socket: ``.p2phost/control.sock``, or, when
        that path is too long for a Unix socket (a deep project directory), a socket named
        by a hash of the project's path in the user's ``runtime_dir()``."""
        path = self.state_dir / "control.sock"
        if len(os.fsencode(path)) <= CONTROL_PATH_MAX:
            return path
        digest = hashlib.sha256(os.fsencode(self.state_dir.resolve())).hexdigest()[:24]
        return runtime_dir() / f"{digest}.sock"

    @cached_property
    def manifest(self) -> Manifest:
        """The validated manifest (raises ``ManifestError``)."""
        return Manifest.load(self.manifest_path)

    @cached_property
    def environment(self) -> PluginEnvironment:
        """The installed plugins."""
        return PluginEnvironment(self.state_dir)

    def identity(self) -> Identity:
        """This project's node identity, created (owner-only) on first use."""
        from p2phost_sdk import Identity  # the crypto libraries: only for commands that sign

        path = self.state_dir / IDENTITY_FILE
        if path.exists():
            return Identity.from_seed(bytes.fromhex(path.read_text().strip()))
        identity = Identity.generate()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not overwrite each other's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.identity()
        with os.fdopen(fd, "w") as out:
            out.write(identity.seed.hex() + "\n")
        return identity
