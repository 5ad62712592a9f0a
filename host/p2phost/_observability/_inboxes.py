"""Records waiting in this node's inboxes on brokers and databases, for the metrics: what
``p2phost inbox stats`` shows, asked at most every ``every`` seconds (asking opens a
connection to the medium) and bounded in time, so a slow broker never stalls a scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from p2phost_sdk import Transport, plugin_name, with_timeout

log = logging.getLogger("p2phost.node")


class InboxWatch:
    """The last answer of each inbox listener's ``inbox_stats``, refreshed now and then."""

    def __init__(self, every: float = 10.0, timeout: float = 2.0) -> None:
        self.every, self.timeout = every, timeout
        self._asked = -every
        self._answer: dict[str, dict[str, Any]] = {}

    async def waiting(self, listeners: Iterable[tuple[Transport, Any]]
                      ) -> dict[str, dict[str, Any]]:
        """Medium URL -> ``records`` waiting and ``oldest_age`` (seconds; None: unknown)."""
        if time.monotonic() - self._asked < self.every:
            return self._answer
        self._asked = time.monotonic()
        answer: dict[str, dict[str, Any]] = {}
        for transport, listener in listeners:
            stats = getattr(transport, "inbox_stats", None)
            if not transport.inbox_based or stats is None:
                continue
            for address in listener.addresses:
                try:
                    got = await with_timeout(stats(address), self.timeout,
                                             plugin=plugin_name(transport),
                                             doing=f"counting its inbox at {address}")
                except Exception as exc:  # a broker that is down must not fail a scrape
                    log.debug("inbox stats of %s: %s", address, exc)
                    continue
                oldest = got.get("oldest")
                answer[address.split("#", 1)[0]] = {
                    "records": got.get("records"),
                    "oldest_age": None if oldest is None else max(0.0, time.time() - oldest)}
        self._answer = answer
        return answer
