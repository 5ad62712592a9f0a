"""Per-peer request rates: a token bucket per sender, with a bounded number of senders."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimit:
    """``rate`` requests a second per peer, bursts of ``burst``; at most ``peers`` tracked
    (the least recently seen is forgotten first, so a flood of ids costs a fixed memory)."""

    def __init__(self, rate: float, burst: float, *, peers: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.peers, self.clock = rate, burst, peers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: Requests refused.
        self.refused = 0

    def allow(self, peer: str) -> bool:
        """Whether ``peer`` may make one more request now."""
        now = self.clock()
        tokens, at = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.peers:
            self._buckets.popitem(last=False)
        if not allowed:
            self.refused += 1
        return allowed
