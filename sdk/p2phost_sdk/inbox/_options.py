"""Tuning shared by every inbox transport, and the backoff their retries use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._aio import Backoff
from .._errors import ConfigError
from ._medium import Retention

#: The longest max-age (seconds, ~136 years): MQTT 5's message expiry is a four-byte count.
MAX_AGE_LIMIT = 2.0**32 - 1


@dataclass(frozen=True)
class InboxOptions:
    """Tuning shared by every inbox transport (plugins expose some as config)."""

    #: Frames a sender may have on the medium beyond what the receiver has taken.
    window: int = 256
    #: Seconds ``listen`` keeps retrying a medium that is down before it gives up.
    connect_timeout: float = 10.0
    #: Seconds a send keeps retrying while the medium is unreachable.
    send_timeout: float = 30.0
    #: Seconds a missing frame may be awaited before the connection is given up.
    gap_timeout: float = 30.0
    #: What this node's inbox keeps at most (``max-age``, ``max-messages``, ``max-bytes``).
    retention: Retention = field(default_factory=Retention)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], plugin: str = "inbox") -> InboxOptions:
        """Options from a plugin's ``[config.NAME]`` (keys ``window``, ``connect-timeout``,
        ``send-timeout``, ``gap-timeout``, ``max-age``, ``max-messages``, ``max-bytes``;
        missing ones keep their defaults). A retention limit no broker can keep (negative,
        not finite, a max-age beyond ``MAX_AGE_LIMIT``) is a ConfigError naming it."""
        default = cls()
        # The schema checks types only; TOML also has -1, inf and nan. Unchecked, a
        # negative max-age became MQTT's 1-second expiry and a huge one failed every send.
        max_age = float(config.get("max-age", 0.0))
        if not 0 <= max_age <= MAX_AGE_LIMIT:  # nan fails both comparisons
            raise ConfigError(plugin, "max-age", f"seconds from 0 (never) to {MAX_AGE_LIMIT:.0f}",
                              config.get("max-age"))
        for key in ("max-messages", "max-bytes"):
            if int(config.get(key, 0)) < 0:
                raise ConfigError(plugin, key, "a whole number from 0 (no limit)", config[key])
        return cls(
            window=int(config.get("window", default.window)),
            connect_timeout=float(config.get("connect-timeout", default.connect_timeout)),
            send_timeout=float(config.get("send-timeout", default.send_timeout)),
            gap_timeout=float(config.get("gap-timeout", default.gap_timeout)),
            retention=Retention(max_age=max_age,
                                max_messages=int(config.get("max-messages", 0)),
                                max_bytes=int(config.get("max-bytes", 0))),
        )


def backoff(attempt: int, initial: float = 0.1, maximum: float = 2.0) -> float:
    """Seconds to wait before retry ``attempt`` (0 = the first): doubling from
    ``initial`` up to ``maximum``, a random point in the upper half (no lockstep)."""
    return Backoff(initial, maximum).delay(attempt)
