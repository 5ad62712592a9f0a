"""Put the p2phost wheel it was released with into the p2phost-registry wheel.

A wheel cannot hold itself, so p2phost's built-in source (inside the p2phost wheel) has the
official plugins and p2phost-sdk but not p2phost. ``scripts/dist`` builds p2phost-registry
after p2phost and names that wheel in ``$P2PHOST_HOST_WHEEL``; it goes in, with its
signature, as ``p2phost_registry/_host/``, so ``p2phost registry seed`` publishes p2phost
too and a plugin author can install it from the registry's index. Without the variable (an
editable install, a plain build) the registry works the same and seed publishes no p2phost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class HostWheelHook(BuildHookInterface):  # type: ignore[type-arg]
    """Force-include ``$P2PHOST_HOST_WHEEL`` and its ``.sig`` as ``p2phost_registry/_host``."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        explicit = os.environ.get("P2PHOST_HOST_WHEEL")
        if self.target_name != "wheel" or version == "editable" or not explicit:
            return
        wheel = Path(explicit).resolve()
        for path in (wheel, wheel.with_name(wheel.name + ".sig")):
            if not path.is_file():
                raise RuntimeError(f"$P2PHOST_HOST_WHEEL: {path} is missing: build with "
                                   "scripts/dist")
            build_data["force_include"][str(path)] = f"p2phost_registry/_host/{path.name}"
