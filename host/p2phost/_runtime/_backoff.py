"""Reconnect delays: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``initial * 2**attempt`` capped at ``maximum``; the wait is a random point in its
    upper half, so peers that lost each other at the same moment do not redial in step."""

    initial: float = 0.1
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (0 = the first retry)."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempt, 62))
        return ceiling / 2 + random.uniform(0, ceiling / 2)
