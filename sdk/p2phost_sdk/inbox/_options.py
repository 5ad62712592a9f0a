"""Tuning shared by every inbox transport, and the backoff their retries use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._aio import Backoff
from ._medium import Retention


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
    def from_config(cls, config: Mapping[str, Any]) -> InboxOptions:
        """Options from a plugin's ``[config.NAME]`` (keys ``window``, ``connect-timeout``,
        ``send-timeout``, ``gap-timeout``; missing ones keep their defaults)."""
        default = cls()
        return cls(
            window=int(config.get("window", default.window)),
            connect_timeout=float(config.get("connect-timeout", default.connect_timeout)),
            send_timeout=float(config.get("send-timeout", default.send_timeout)),
            gap_timeout=float(config.get("gap-timeout", default.gap_timeout)),
            retention=Retention(max_age=float(config.get("max-age", 0.0)),
                                max_messages=int(config.get("max-messages", 0)),
                                max_bytes=int(config.get("max-bytes", 0))),
        )


def backoff(attempt: int, initial: float = 0.1, maximum: float = 2.0) -> float:
    """Seconds to wait before retry ``attempt`` (0 = the first): doubling from
    ``initial`` up to ``maximum``, a random point in the upper half (no lockstep)."""
    return Backoff(initial, maximum).delay(attempt)
