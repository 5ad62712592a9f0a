"""Running the discovery plugins: none is lost silently.

A plugin that cannot start (no multicast route, broker down, a bad interface) neither stops
the node nor is forgotten: it is shown as ``down`` with the error and its fix in
``p2phost peers`` and ``p2phost doctor``, and started again with capped backoff until it
works. The counters each plugin keeps (records accepted, rejected by reason) are shown
beside it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2phost_sdk import Backoff, Discovery, DiscoveryEvents, TaskOwner, close_within, with_timeout

log = logging.getLogger("p2phost.node")

#: Retries of a plugin that failed to start: 1 s, 2 s, ... at most a minute apart.
RETRY = Backoff(initial=1.0, maximum=60.0)


@dataclass
class _Plugin:
    discovery: Discovery
    name: str
    state: str = "starting"
    error: str = ""
    fix: str = ""
    attempts: int = 0


class DiscoveryRunner:
    """Starts every discovery plugin, retries the ones that fail, stops them all."""

    def __init__(self, plugins: Sequence[Discovery], *, timeout: float,
                 retry: Backoff = RETRY) -> None:
        self._plugins = [_Plugin(d, _name(d)) for d in plugins]
        self._timeout = timeout
        self._retry = retry
        self._tasks = TaskOwner("discovery", logger=log)

    async def start(self, events: DiscoveryEvents) -> None:
        """Try each plugin once now; the failed ones go on retrying in the background."""
        for plugin in self._plugins:
            if not await self._try(plugin, events):
                self._tasks.spawn(self._keep_trying(plugin, events),
                                  f"discovery {plugin.name} retry")

    async def _try(self, plugin: _Plugin, events: DiscoveryEvents) -> bool:
        plugin.attempts += 1
        try:
            await with_timeout(plugin.discovery.start(events), self._timeout,
                               plugin=plugin.name, doing="starting discovery")
        except Exception as exc:
            # The same words as before, so nobody's log watching breaks: then the retry.
            message = f"{type(exc).__name__}: {exc}"
            if plugin.error != message:
                log.error("discovery %s failed to start, running without it (retrying with "
                          "backoff): %s", type(plugin.discovery).__name__, message)
            plugin.state, plugin.error = "down", message
            plugin.fix = str(getattr(exc, "fix", "") or (
                f"correct [config.{plugin.name}] in p2phost.toml or the network it names "
                "(the node retries by itself meanwhile)"))
            try:  # a half-started plugin must not leave tasks or sockets behind
                async with asyncio.timeout(self._timeout):
                    await plugin.discovery.stop()
            except Exception as stop_exc:
                log.debug("stopping %s after a failed start: %s", plugin.name, stop_exc)
            return False
        if plugin.attempts > 1:
            log.info("discovery %s started after %d attempts", plugin.name, plugin.attempts)
        plugin.state, plugin.error, plugin.fix = "up", "", ""
        return True

    async def _keep_trying(self, plugin: _Plugin, events: DiscoveryEvents) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self._retry.delay(failures))
            failures += 1
            if await self._try(plugin, events):
                return

    async def stop(self) -> None:
        """Stop retrying, then stop every plugin that runs (errors logged, never raised)."""
        await self._tasks.close(self._timeout)
        for plugin in self._plugins:
            if plugin.state != "up":
                continue
            plugin.state = "stopped"
            await close_within(plugin.discovery.stop(), self._timeout * 2, plugin=plugin.name,
                               doing="stopping discovery", logger=log)

    def status(self) -> list[dict[str, Any]]:
        """Each plugin: name, state (up, down, starting, stopped), error, counters."""
        out = []
        for plugin in self._plugins:
            state, error, fix = plugin.state, plugin.error, plugin.fix
            try:
                counters = dict(plugin.discovery.counters())
                trouble = plugin.discovery.health() if state == "up" else ""
            except Exception as exc:  # a plugin's bug must not break `p2phost peers`
                counters, trouble = {}, ""
                log.debug("counters of %s failed: %s", plugin.name, exc)
            if trouble:  # started, but not working (its broker is down...)
                state = "down"
                error, _, fix = trouble.partition("; fix: ")
            out.append({"name": plugin.name, "state": state, "error": error, "fix": fix,
                        "attempts": plugin.attempts, "counters": counters})
        return out


def _name(discovery: Discovery) -> str:
    return str(getattr(discovery, "name", "") or getattr(discovery, "source", "")
               or type(discovery).__name__)
