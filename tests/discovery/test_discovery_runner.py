"""No silent loss of discovery: a plugin that cannot start is retried and shown down."""

from __future__ import annotations

import asyncio

from p2phost._runtime.node._discovering import DiscoveryRunner
from p2phost_sdk import Backoff, Discovery, DiscoveryEvents, P2PHostError
from p2phost_sdk.testing.discovery import RecordingEvents, wait_until


class Flaky(Discovery):
    """Fails to start ``failures`` times (like a LAN without multicast), then works."""

    name = "flaky-discovery"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = self.stops = 0
        self.running = False

    async def start(self, events: DiscoveryEvents) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            error = P2PHostError("no interface can multicast")
            error.fix = "bring one up"  # type: ignore[attr-defined]
            raise error
        self.running = True

    async def stop(self) -> None:
        self.stops += 1
        self.running = False

    def counters(self) -> dict[str, int]:
        return {"accepted": 3}


async def test_a_plugin_that_cannot_start_is_retried_and_shown_down_meanwhile() -> None:
    flaky = Flaky(failures=2)
    runner = DiscoveryRunner([flaky], timeout=1.0, retry=Backoff(0.05, 0.1))
    await runner.start(RecordingEvents())
    [status] = runner.status()
    assert status["state"] == "down" and status["fix"] == "bring one up"
    assert "no interface can multicast" in status["error"]
    await wait_until(lambda: flaky.running, 3, "the retries starting it")
    [status] = runner.status()
    assert (status["state"], status["attempts"], status["counters"]) == ("up", 3, {"accepted": 3})
    await runner.stop()
    assert not flaky.running and runner.status()[0]["state"] == "stopped"


async def test_stop_ends_the_retries_of_a_plugin_that_never_starts() -> None:
    never = Flaky(failures=10**6)
    runner = DiscoveryRunner([never], timeout=1.0, retry=Backoff(0.01, 0.02))
    await runner.start(RecordingEvents())
    await wait_until(lambda: never.starts >= 3, 3, "retrying")
    await runner.stop()
    starts = never.starts
    await asyncio.sleep(0.1)
    assert never.starts == starts and runner.status()[0]["state"] == "down"
