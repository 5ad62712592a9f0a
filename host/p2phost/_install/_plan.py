"""What an install, upgrade or removal will do: the changes shown to the user, and the
plugins and manifest edits :class:`~._installer.Installer` applies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.version import Version

from .._lock import LockedFile
from ._registry import PluginInfo, Release


@dataclass(frozen=True)
class Change:
    """One plugin whose installed version changes (None: not installed before/after)."""

    name: str
    old: str | None
    new: str | None
    release: Release | None = None
    info: PluginInfo | None = None

    def describe(self) -> str:
        """``+ name 1.0``, ``- name 1.0`` or ``name 1.0 -> 1.1``."""
        if self.old is None:
            return f"+ {self.name} {self.new}"
        if self.new is None:
            return f"- {self.name} {self.old}"
        return f"  {self.name} {self.old} -> {self.new}"


@dataclass(frozen=True)
class Plan:
    """What an operation will do: the plugins to lock and the manifest edits."""

    plugins: tuple[Release | LockedFile, ...]
    changes: tuple[Change, ...]
    declare: Mapping[str, str] = field(default_factory=dict)
    undeclare: tuple[str, ...] = ()


def default_specifier(version: str) -> str:
    """What ``install NAME`` records: this version up to the next breaking one."""
    v = Version(version)
    upper = f"{v.major + 1}" if v.major else f"0.{v.minor + 1}"
    return f">={version},<{upper}"
