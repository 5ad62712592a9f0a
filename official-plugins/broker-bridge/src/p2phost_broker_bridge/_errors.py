"""The bridge's errors. Every one says what is wrong and, on a ``fix:`` line, what to do::

    P2PHostError (p2phost_sdk)
    ├── ConfigError (p2phost_sdk)
    │   └── MappingError        a [config.broker-bridge.mappings.NAME] entry is wrong
    └── TransportError (p2phost_sdk)
        └── BrokerUnavailable   a broker refused, dropped or did not answer; retried with
                                back-off for consumers, raised to the handler for publishes
"""

from __future__ import annotations

from p2phost_sdk import ConfigError, TransportError

PLUGIN = "broker-bridge"


class MappingError(ConfigError):
    """A mapping in ``[config.broker-bridge]`` is wrong; the message ends with a fix."""

    def __init__(self, field: str, expected: str, got: object, fix: str) -> None:
        super().__init__(PLUGIN, field, expected, got)
        self.fix = fix
        self.args = (f"{self.args[0]}\nfix: {fix}",)


class BrokerUnavailable(TransportError):
    """A broker refused, dropped or did not answer (the message names it)."""
