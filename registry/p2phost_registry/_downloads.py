"""Download counts: counted in memory per version, written in batches, rate-limited per client.

A download costs a dictionary update, never a database write and never a page render; a
background task (owned by the app) writes the batch at most once per :data:`FLUSH_INTERVAL`.
One client address counts at most once per file per :data:`CLIENT_WINDOW`, so a load test or
a CI loop from one machine cannot reorder "Most downloaded".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("p2phost.registry")

FLUSH_INTERVAL = 1.0
#: A client address counts once per file in this many seconds.
CLIENT_WINDOW = 3600.0
#: Past this many remembered (address, file) pairs, the oldest window ends early.
MAX_CLIENTS = 100_000
#: A batch that cannot be written is kept and retried, up to this many versions.
MAX_PENDING = 100_000

Key = tuple[str, str]


class DownloadCounter:
    """Pending counts per (plugin, version) and who was counted recently."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: dict[Key, int] = {}
        self._seen: dict[tuple[str, str], float] = {}

    def count(self, client: str, plugin: str, version: str, filename: str) -> bool:
        """Count one download unless ``client`` was counted for ``filename`` recently."""
        now = self._clock()
        key = (client, filename)
        last = self._seen.get(key)
        if last is not None and now - last < CLIENT_WINDOW:
            return False
        if len(self._seen) >= MAX_CLIENTS:
            self._prune(now)
        self._seen[key] = now
        if len(self._pending) < MAX_PENDING or (plugin, version) in self._pending:
            self._pending[(plugin, version)] = self._pending.get((plugin, version), 0) + 1
        return True

    def _prune(self, now: float) -> None:
        self._seen = {k: t for k, t in self._seen.items() if now - t < CLIENT_WINDOW}
        while len(self._seen) >= MAX_CLIENTS:  # all recent: forget the oldest half
            oldest = sorted(self._seen.items(), key=lambda kv: kv[1])[: MAX_CLIENTS // 2]
            for k, _ in oldest:
                del self._seen[k]

    def take(self) -> dict[Key, int]:
        """The pending counts, now cleared."""
        batch, self._pending = self._pending, {}
        return batch

    def give_back(self, batch: dict[Key, int]) -> None:
        """Return a batch that could not be written."""
        for key, n in batch.items():
            self._pending[key] = self._pending.get(key, 0) + n

    async def flush_forever(self, write: Callable[[dict[Key, int]], Awaitable[None]]) -> None:
        """Write pending counts at most once per interval until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL)
                await self.flush(write)
        finally:
            # On shutdown: one last write, so a clean stop loses no counts.
            await asyncio.shield(self.flush(write))

    async def flush(self, write: Callable[[dict[Key, int]], Awaitable[None]]) -> None:
        """Write the pending counts now."""
        batch = self.take()
        if not batch:
            return
        try:
            await write(batch)
        except Exception as exc:  # a database hiccup must not lose counts or stop the task
            log.warning("cannot write %d download counts yet: %s", sum(batch.values()), exc)
            self.give_back(batch)
