"""Who may start a handshake with this node, and a log of failed ones that a flood
cannot fill.

Unauthenticated connections are cheap to open and costly to serve, so the node bounds
them by construction: at most ``total`` handshakes in progress, at most ``per_source``
from one source host (one host cannot crowd out the rest), each of them reading frames
no larger than the security plugin's largest handshake message (see ``handshake``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable


def source_of(address: str) -> str:
    """The host part of a remote address (``tcp://1.2.3.4:5`` -> ``1.2.3.4``)."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


class HandshakeGate:
    """Counts handshakes in progress, in all and per source host."""

    def __init__(self, *, total: int, per_source: int) -> None:
        self.total = total
        self.per_source = per_source
        self._sources: Counter[str] = Counter()
        self._pending = 0
        #: Connections refused because too many handshakes were in progress.
        self.refused = 0

    def __len__(self) -> int:
        return self._pending

    def enter(self, address: str) -> str | None:
        """Admit a handshake from ``address``: None, or why not."""
        source = source_of(address)
        if self._pending >= self.total:
            self.refused += 1
            return f"too many handshakes in progress ({self.total})"
        if self._sources[source] >= self.per_source:
            self.refused += 1
            return f"too many handshakes in progress from {source} ({self.per_source})"
        self._pending += 1
        self._sources[source] += 1
        return None

    def leave(self, address: str) -> None:
        """A handshake admitted by ``enter`` finished (either way)."""
        source = source_of(address)
        self._pending -= 1
        self._sources[source] -= 1
        if self._sources[source] <= 0:
            del self._sources[source]


class RateLimitedLog:
    """Logs the first ``burst`` events of each ``window`` seconds; the rest are counted
    and reported in one line when the next window starts (and by ``flush``)."""

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = 5,
                 window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.what = logger, what
        self.burst, self.window, self.clock = burst, window, clock
        self._start = -window
        self._logged = 0
        self._suppressed = 0
        #: Every event, logged or not.
        self.count = 0
        #: Events by their short reason (a metric label: keep the set small).
        self.reasons: Counter[str] = Counter()

    def warning(self, message: str, *args: object, reason: str = "other") -> None:
        """One event: logged while the window's burst lasts, counted after."""
        self.count += 1
        self.reasons[reason] += 1
        now = self.clock()
        if now - self._start >= self.window:
            self.flush()
            self._start, self._logged = now, 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.warning(message, *args)
        else:
            self._suppressed += 1

    def tick(self) -> None:
        """Report what was not logged once its window is over (called now and then)."""
        if self._suppressed and self.clock() - self._start >= self.window:
            self.flush()

    def flush(self) -> None:
        """Report how many events were not logged, if any."""
        if self._suppressed:
            self.logger.warning("%d more %s in the last %gs were not logged (%d in all)",
                                self._suppressed, self.what, self.window, self.count)
            self._suppressed = 0
