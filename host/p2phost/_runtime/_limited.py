"""Per-cause rate limits for the lines a remote peer can cause once per message: one
:class:`~p2phost_sdk.RateLimitedLog` per key (a peer and a topic), so one peer's flood
neither fills the log nor hides another peer's (or topic's) first line.

Only failure paths call it: a message handled well costs nothing here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable, Mapping

from p2phost_sdk import RateLimitedLog

#: Keys remembered at most (the oldest is reported and forgotten first).
_KEYS = 256
#: (Peer, topic) pairs :class:`WarnedOnce` remembers at most (the oldest forgotten first).
_WARNED = 4096


class LimitedLogs:
    """Lines of one kind (``what``, such as "handler failures"), rate-limited per key:
    the first of each key's 10 s window logged in full (with its traceback when given),
    the rest counted and reported as ``N more ... were not logged``."""

    def __init__(self, logger: logging.Logger, what: str, *, level: int = logging.WARNING,
                 burst: int = 1, keys: int = _KEYS) -> None:
        self.logger, self.what, self.level, self.burst, self.keys = \
            logger, what, level, burst, keys
        self._logs: OrderedDict[Hashable, RateLimitedLog] = OrderedDict()

    def log(self, key: tuple[str, ...], message: str, *args: object,
            exc_info: BaseException | None = None,
            fields: Mapping[str, str] | None = None) -> None:
        """One event of ``key`` (its parts name it in the count's line); ``fields``: what
        the line is about, for JSON logs (see :meth:`RateLimitedLog.warning`)."""
        limited = self._logs.pop(key, None) or RateLimitedLog(
            self.logger, f"{self.what} ({', '.join(key)})", burst=self.burst,
            level=self.level)
        self._logs[key] = limited  # the most recent last
        if len(self._logs) > self.keys:
            self._logs.popitem(last=False)[1].flush()
        limited.warning(message, *args, exc_info=exc_info, fields=fields)

    def flush(self) -> None:
        """Report every key's events that were not logged (the node closing)."""
        for limited in self._logs.values():
            limited.flush()


class WarnedOnce:
    """The (peer, topic) pairs already warned about, for a line that says something once
    per pair, not per message. Bounded (the oldest forgotten first, and then warned about
    again): a peer can come with a new identity each time."""

    def __init__(self, most: int = _WARNED) -> None:
        self.most = most
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, peer: str, topic: str) -> bool:
        """Whether this is the first time for ``peer`` and ``topic`` (remembered now)."""
        if (peer, topic) in self._pairs:
            return False
        self._pairs[peer, topic] = None
        if len(self._pairs) > self.most:
            self._pairs.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._pairs)
