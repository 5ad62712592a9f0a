"""The relay's settings, from ``[config.relay]``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p2phost_sdk import ConfigError

from ._hop import HopLimits


@dataclass(frozen=True)
class RelaySettings:
    """What this node does as a relay, and how its circuits behave."""

    serve: bool = False
    limits: HopLimits = field(default_factory=HopLimits)
    forward_timeout: float = 5.0
    buffer_bytes: int = 4 * 1024 * 1024
    #: Bytes a relay buffers over all its circuits (for far ends that have not taken them).
    buffer_total: int = 64 * 1024 * 1024
    request_timeout: float = 10.0
    #: Dial a relayed peer directly when it offers addresses, and close the circuit.
    upgrade: bool = True


_INTS = {"reservations": "reservations", "circuits": "circuits",
         "circuits-per-peer": "circuits_per_peer", "circuit-bytes": "circuit_bytes"}
_SECONDS = {"reservation-ttl": "reservation_ttl", "circuit-seconds": "circuit_seconds"}


def settings_of(name: str, config: Mapping[str, Any]) -> RelaySettings:
    """The settings in ``config``; ConfigError naming the first bad field."""
    limits: dict[str, Any] = {}
    for key, attr in _INTS.items():
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, key, "a whole number of at least 1", value)
            limits[attr] = value
    for key, attr in _SECONDS.items():
        if key in config:
            limits[attr] = _seconds(name, key, config[key])
    buffer_bytes = config.get("buffer-bytes", 4 * 1024 * 1024)
    if isinstance(buffer_bytes, bool) or not isinstance(buffer_bytes, int) or buffer_bytes < 1:
        raise ConfigError(name, "buffer-bytes", "a whole number of at least 1", buffer_bytes)
    buffer_total = config.get("buffer-total", 64 * 1024 * 1024)
    if isinstance(buffer_total, bool) or not isinstance(buffer_total, int) or buffer_total < 1:
        raise ConfigError(name, "buffer-total", "a whole number of at least 1", buffer_total)
    serve, upgrade = config.get("serve", False), config.get("upgrade", True)
    for key, value in (("serve", serve), ("upgrade", upgrade)):
        if not isinstance(value, bool):
            raise ConfigError(name, key, "true or false", value)
    return RelaySettings(
        serve=serve, upgrade=upgrade, limits=HopLimits(**limits), buffer_bytes=buffer_bytes,
        buffer_total=buffer_total,
        forward_timeout=_seconds(name, "forward-timeout", config.get("forward-timeout", 5.0)),
        request_timeout=_seconds(name, "request-timeout", config.get("request-timeout", 10.0)))


def _seconds(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(name, key, "a positive number of seconds", value)
    return float(value)
