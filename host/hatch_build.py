"""Put the built-in source (the official plugins' signed wheels) into the p2phost wheel.

``scripts/dist`` writes it to ``dist/plugins/`` (or ``$P2PHOST_BUILTIN_DIR``) before building
p2phost. A wheel built without it would install a p2phost that cannot install any plugin
offline, so that build fails instead; editable installs (the dev checkout) find the
directory at run time instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class BuiltinSourceHook(BuildHookInterface):  # type: ignore[type-arg]
    """Force-include the built-in source as ``p2phost/_builtin``."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        explicit = os.environ.get("P2PHOST_BUILTIN_DIR")
        builtin = Path(explicit) if explicit else Path(self.root).parent / "dist" / "plugins"
        if not (builtin / "release-key.pub").is_file():
            raise RuntimeError(
                f"{builtin} holds no built-in source (release-key.pub and the official "
                "plugins' signed wheels): build p2phost with scripts/dist")
        build_data["force_include"][str(builtin.resolve())] = "p2phost/_builtin"
