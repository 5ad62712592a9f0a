"""A plugin project loaded the way the host loads it, to feed its objects to the kits.

``p2phost plugin check`` runs every kit of a plugin's kinds against the objects its hooks
make, configured from its schema's defaults and the optional ``[tool.p2phost.check]``
table of its pyproject::

    [tool.p2phost.check]
    config = { interval = 0.2 }          # [config.NAME] for the objects under test
    listen = "myscheme://127.0.0.1:0"    # transports: an address to listen on ({n}: a counter)
    unreachable = "myscheme://127.0.0.1:1"  # transports: where nothing listens
"""

from __future__ import annotations

import importlib
import itertools
import logging
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._context import PluginContext
from .._identity import Identity
from .._metadata import PluginMetadata, normalize_name
from ._kits import KITS


def load_object(reference: str) -> Any:
    """The object an entry point names (``module`` or ``module:attr.attr``)."""
    module, _, attrs = reference.partition(":")
    found: Any = importlib.import_module(module.strip())
    for attr in filter(None, attrs.strip().split(".")):
        found = getattr(found, attr)
    return found


@dataclass
class PluginUnderTest:
    """A plugin project's metadata, its hooks object, and the config to test it with."""

    metadata: PluginMetadata
    reference: str
    hooks: Any
    config: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)
    _state: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="p2phost-check-"))
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def from_project(cls, root: Path) -> PluginUnderTest:
        """Load the project at ``root`` (its package must be importable)."""
        metadata = PluginMetadata.from_pyproject(root)
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        points = data.get("project", {}).get("entry-points", {}).get("p2phost.plugins", {})
        reference = next((str(v) for k, v in points.items()
                          if normalize_name(k) == metadata.name), None)
        if reference is None:
            raise LookupError(f'no [project.entry-points."p2phost.plugins"] entry named '
                              f"{metadata.name!r}")
        check = data.get("tool", {}).get("p2phost", {}).get("check", {})
        config = metadata.config.validate(check.get("config", {}), metadata.name)
        return cls(metadata, reference, load_object(reference), config, check)

    def make(self, kind: str, *, max_frame_size: int = 16 * 1024 * 1024) -> list[Any]:
        """What the plugin's hook for ``kind`` returns, called as the host calls it."""
        hook = getattr(self.hooks, KITS[kind].hook, None)
        if hook is None:
            return []
        context = PluginContext(
            name=self.metadata.name, config=dict(self.config),
            peer_id=Identity.generate().peer_id,
            state_dir=Path(self._state.name) / self.metadata.name,
            max_frame_size=max_frame_size,
            logger=logging.getLogger(f"p2phost.plugin.{self.metadata.name}"),
        )
        return list(hook(context=context))

    def listen_address(self, scheme: str) -> str:
        """A fresh address for a transport of ``scheme`` to listen on."""
        template = str(self.check.get("listen", f"{scheme}://127.0.0.1:0"))
        return template.replace("{n}", str(next(self._counter)))

    def kit_fixture(self, kind: str, index: int) -> Any:
        """The value of ``kind``'s kit fixture for the ``index``-th object of that kind."""
        if kind == "transport":
            from .transport import TransportCase

            scheme = type(self.make("transport")[index]).schemes[0]
            return TransportCase(
                make=lambda limit: self.make("transport", max_frame_size=limit)[index],
                listen_address=lambda: self.listen_address(scheme),
                unreachable_address=self.check.get("unreachable"),
            )
        if kind == "codec":
            return self.make("codec")[index]
        def factory() -> Any:
            return self.make(kind)[index]

        # Directed discovery (``directed = true`` under [tool.p2phost.check]): the kit
        # skips the tests that expect instances told nothing to find each other.
        factory.directed = bool(self.check.get("directed", False))  # type: ignore[attr-defined]
        return factory
