"""The host's user-facing errors: each says what is wrong, where, and what fixes it."""

from __future__ import annotations

from pathlib import Path

from p2phost_sdk import P2PHostError


class UserError(P2PHostError):
    """Something the user can fix; printed as one message, never as a traceback."""

    #: The process exit code for this error.
    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message, self.fix = message, fix
        super().__init__(message if fix is None else f"{message} (fix: {fix})")


class ManifestError(UserError):
    """``p2phost.toml`` (or ``p2phost.lock``) is wrong at ``path:line`` in ``field``."""

    def __init__(
        self,
        path: Path,
        line: int | None,
        field: str,
        message: str,
        *,
        fix: str | None = None,
    ) -> None:
        self.path, self.line, self.field = path, line, field
        where = f"{path.name}:{line}" if line else path.name
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}",
                         fix=fix)


class ProjectNotFound(UserError):
    """No ``p2phost.toml`` in this directory or any parent."""


class CodecMissing(UserError):
    """The node was asked to offer a codec (``open_node(codecs=...)``) that none of the
    project's plugins provides; ``content_type`` names it."""

    def __init__(self, content_type: str, root: Path) -> None:
        self.content_type = content_type
        super().__init__(f"the p2phost project at {root} has no codec for {content_type}",
                         fix=f"add a codec plugin for {content_type} to its [plugins] "
                             "(p2phost plugin install NAME, e.g. msgpack-codec for "
                             "application/msgpack)")


class PluginLoadError(UserError):
    """A declared plugin is missing, incompatible, or broken."""

    #: The plugin that is not installed, when that is the problem (a fix may name its
    #: distribution).
    missing: str | None = None
