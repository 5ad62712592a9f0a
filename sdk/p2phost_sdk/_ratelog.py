"""A log of repeated warnings that a flood cannot fill: the first few of each window are
logged, the rest counted and reported in one line.

The host uses it for refused connections and failed handshakes, the inbox for foreign
records, plugins for whatever a peer or a broker can make them warn about per message
(postgres-transport's refused records). Only :mod:`logging` and :mod:`time`: importing it
costs nothing.

Its lines carry ``rate_limited=True`` (a record attribute): a filter that limits repeats
by their template (the host's ``RepeatLimit``) lets them through, as they are limited
already, and by a finer key (per peer and topic) than a template.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

#: The record attribute that marks a line as limited here already.
_LIMITED = {"rate_limited": True}


class RateLimitedLog:
    """Logs the first ``burst`` events of each ``window`` seconds; the rest are counted
    and reported in one line (``N more WHAT in the last Ws were not logged``) when the
    next window starts with an event, by :meth:`tick` or by :meth:`flush`. ``level`` is
    the lines' logging level (:meth:`warning` logs at it, a warning by default)."""

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = 5,
                 window: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 level: int = logging.WARNING) -> None:
        self.logger, self.what, self.level = logger, what, level
        self.burst, self.window, self.clock = burst, window, clock
        self._start = -window
        self._logged = 0
        self._suppressed = 0
        #: Every event, logged or not.
        self.count = 0
        #: Events by their short reason (a metric label: keep the set small).
        self.reasons: Counter[str] = Counter()

    def warning(self, message: str, *args: object, reason: str = "other",
                exc_info: BaseException | None = None,
                fields: Mapping[str, str] | None = None) -> None:
        """One event: logged while the window's burst lasts, counted after. ``exc_info``:
        an exception whose traceback goes with the line if it is logged (so the first of
        a window carries it, and the repeats cost no traceback). ``fields``: what the line
        is about (``peer``, ``topic``, ``message_id``), as the record's ``fields``
        attribute (the host's JSON log lines carry them)."""
        self.count += 1
        self.reasons[reason] += 1
        now = self.clock()
        if now - self._start >= self.window:
            self.flush()
            self._start, self._logged = now, 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.log(self.level, message, *args, exc_info=exc_info,
                            extra=_LIMITED if fields is None else {**_LIMITED, "fields": fields})
        else:
            self._suppressed += 1

    def tick(self) -> None:
        """Report what was not logged once its window is over (called now and then)."""
        if self._suppressed and self.clock() - self._start >= self.window:
            self.flush()

    def flush(self) -> None:
        """Report how many events were not logged, if any."""
        if self._suppressed:
            self.logger.log(self.level, "%d more %s in the last %gs were not logged (%d in all)",
                            self._suppressed, self.what, self.window, self.count,
                            extra=_LIMITED)
            self._suppressed = 0
