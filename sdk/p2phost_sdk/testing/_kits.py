"""Which conformance kit tests which kind, and what a plugin's tests give each kit."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Kit:
    """One kind's conformance kit."""

    kind: str
    #: The module holding the kit (also registered as a pytest plugin).
    module: str
    #: The class a plugin's test class subclasses.
    conformance: str
    #: The fixture the plugin's tests provide.
    fixture: str
    #: The hook of a plugin that makes objects of this kind.
    hook: str

    def available(self) -> bool:
        """Whether this SDK ships the kit."""
        return importlib.util.find_spec(self.module) is not None

    def conformance_class(self) -> type:
        """The kit's conformance class."""
        cls = getattr(importlib.import_module(self.module), self.conformance)
        assert isinstance(cls, type)
        return cls


#: The kits by kind.
KITS: dict[str, Kit] = {
    kit.kind: kit
    for kit in (
        Kit("transport", "p2phost_sdk.testing.transport", "TransportConformance",
            "transport_case", "p2phost_transports"),
        Kit("codec", "p2phost_sdk.testing.codec", "CodecConformance", "codec",
            "p2phost_codecs"),
        Kit("discovery", "p2phost_sdk.testing.discovery", "DiscoveryConformance",
            "discovery_factory", "p2phost_discovery"),
        Kit("security", "p2phost_sdk.testing.security", "SecurityConformance",
            "security_factory", "p2phost_security"),
        Kit("app", "p2phost_sdk.testing.app", "AppConformance", "app_factory",
            "p2phost_apps"),
    )
}
