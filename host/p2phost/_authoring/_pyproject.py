"""Reading a plugin project's ``pyproject.toml``: where it is, its name, version and sources."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import UserError


@dataclass(frozen=True)
class PluginProject:
    """A plugin project on disk, as ``check``, ``build`` and ``publish`` see it."""

    root: Path
    data: dict[str, Any]

    @classmethod
    def open(cls, directory: Path) -> PluginProject:
        """The project in ``directory``; a clear error when it has no readable pyproject."""
        root = directory.resolve()
        path = root / "pyproject.toml"
        if not path.is_file():
            raise UserError(f"{root} is not a plugin project (no pyproject.toml)",
                            fix="pass the project's directory, or create one with "
                                "p2phost plugin new KIND NAME")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{path}: {exc}", fix="fix the TOML syntax") from exc
        return cls(root, data)

    @property
    def project(self) -> dict[str, Any]:
        """The ``[project]`` table."""
        table = self.data.get("project", {})
        return table if isinstance(table, dict) else {}

    @property
    def name(self) -> str:
        """``[project] name``."""
        return str(self.project.get("name", ""))

    @property
    def version(self) -> str:
        """``[project] version``."""
        return str(self.project.get("version", ""))

    @property
    def entry_points(self) -> dict[str, str]:
        """The project's ``p2phost.plugins`` entry points (name -> object reference)."""
        groups = self.project.get("entry-points", {})
        table = groups.get("p2phost.plugins", {}) if isinstance(groups, dict) else {}
        return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}

    def table(self, *keys: str) -> dict[str, Any]:
        """The nested table ``data[k1][k2]...`` or an empty one."""
        node: Any = self.data
        for key in keys:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}

    def source_root(self) -> Path:
        """The directory to put on ``sys.path`` to import the plugin without installing it."""
        packages = self.table("tool", "hatch", "build", "targets", "wheel").get("packages")
        if isinstance(packages, list) and packages:
            return (self.root / str(packages[0])).parent
        return self.root / "src" if (self.root / "src").is_dir() else self.root
