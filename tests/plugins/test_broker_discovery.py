"""broker-discovery: the SDK discovery kit on real Redis and NATS, silence, junk, outages."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis

from p2phost_sdk import ConfigError, Identity, PresenceSigner
from p2phost_sdk.testing.discovery import DiscoveryConformance, RecordingEvents, wait_until
from tests.conftest import service_or_skip
from tests.discovery.plugins import use_plugin_source

use_plugin_source("broker-discovery")

from p2phost_broker_discovery import (  # noqa: E402
    BrokerDiscovery,
    BrokerSettings,
    broker_discovery,
    encode,
)

REDIS = "redis://127.0.0.1:6379/0"
NATS = "nats://127.0.0.1:4222"


def entry(identity: Identity, scope: str, addresses: list[str], *, lifetime: float = 5.0,
          goodbye: bool = False) -> bytes:
    """A presence entry signed by ``identity``."""
    return encode(PresenceSigner(identity).sign(scope, addresses, lifetime=lifetime,
                                                goodbye=goodbye))


def fast(url: str, **overrides: Any) -> BrokerSettings:
    """Short timings in a scope no other test (or test run) uses."""
    values = {"url": url, "scope": f"t{os.getpid()}-{secrets.token_hex(4)}",
              "interval": 0.2, "expiry": 1.0, **overrides}
    return BrokerSettings.from_config(values)


class TestRedisConformance(DiscoveryConformance):
    found_within = 3.0
    lost_within = 3.0

    @pytest.fixture
    def discovery_factory(self) -> Callable[[], BrokerDiscovery]:
        service_or_skip("Redis", 6379)
        settings = fast(REDIS)
        return lambda: broker_discovery(settings)


class TestNatsConformance(DiscoveryConformance):
    found_within = 3.0
    lost_within = 3.0

    @pytest.fixture
    def discovery_factory(self) -> Callable[[], BrokerDiscovery]:
        service_or_skip("NATS", 4222)
        settings = fast(NATS)
        return lambda: broker_discovery(settings)


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    service_or_skip("Redis", 6379)
    client = aioredis.from_url(REDIS, socket_timeout=5)
    yield client
    await client.aclose()


async def test_redis_silent_peer_expires_and_junk_keys_are_ignored(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = fast(REDIS)
    discovery, events = broker_discovery(settings), RecordingEvents()
    prefix = f"p2phost:presence:{settings.scope}:"
    ghost_key, victim_key = Identity.generate(), Identity.generate()
    ghost, victim = ghost_key.peer_id, victim_key.peer_id
    forger = Identity.generate().peer_id
    junk = {
        "not-json": b"{{{",
        Identity.generate().peer_id: b"[1, 2]",
        Identity.generate().peer_id: b"x" * 10_000,
        Identity.generate().peer_id: entry(victim_key, settings.scope, ["tcp://a:1"]),
        Identity.generate().peer_id: json.dumps({"id": "nope", "addresses": ["tcp://a:1"]}),
        forger: json.dumps({**json.loads(entry(victim_key, settings.scope, ["tcp://a:1"])),
                            "id": forger}),  # another peer's signature
        # Unsigned, as before signatures: refused.
        Identity.generate().peer_id: json.dumps({"id": victim, "addresses": ["tcp://a:1"]}),
    }
    try:
        for key, value in junk.items():
            await redis_client.set(prefix + key, value, px=30_000)
        # A node that was SIGKILLed: its key is there, and is never refreshed again.
        await redis_client.set(prefix + ghost, entry(ghost_key, settings.scope,
                                                     ["tcp://127.0.0.1:9"], lifetime=0.8),
                               px=800)
        await discovery.start(events)
        await wait_until(lambda: ghost in events.found, 2, "the ghost's last heartbeat")
        took = await wait_until(lambda: ghost in events.lost, 3, "the ghost expiring")
        assert took < settings.expiry + settings.interval + 0.5
    finally:
        await discovery.stop()
        await redis_client.delete(*[prefix + k for k in junk])
    assert not events.found and discovery.rejected.count >= len(junk)
    assert any("ignored announcement from key" in r.message for r in caplog.records)


async def test_nats_junk_messages_are_ignored() -> None:
    service_or_skip("NATS", 4222)
    settings = fast(NATS)
    discovery, events = broker_discovery(settings), RecordingEvents()
    honest_key = Identity.generate()
    honest = honest_key.peer_id
    client = await nats.connect(NATS, connect_timeout=5)
    try:
        await discovery.start(events)
        subject = f"p2phost.presence.{settings.scope}"
        for _ in range(30):  # heartbeats, until the discovery has subscribed and heard one
            await client.publish(subject, entry(honest_key, settings.scope,
                                                ["tcp://127.0.0.1:9"]))
            await asyncio.sleep(0.1)
            if honest in events.found:
                break
        for junk in [b"", b"\xff\xfe", b"null", b"x" * 8000,
                     json.dumps({"id": honest, "addresses": "tcp://a:1"}).encode(),
                     json.dumps({"id": honest, "addresses": ["tcp://a:1"] * 17}).encode(),
                     # A goodbye in the peer's name, not signed by it: it stays.
                     json.dumps({**json.loads(entry(Identity.generate(), settings.scope, [],
                                                    goodbye=True)), "id": honest}).encode()]:
            await client.publish(subject, junk)
        await client.flush(timeout=5)
        await wait_until(lambda: discovery.rejected.count == 7, 3, "rejecting the junk")
        assert honest not in events.lost
        took = await wait_until(lambda: honest in events.lost, 3, "silence expiring")
        assert took < settings.expiry + settings.interval + 0.5
    finally:
        await client.close()
        await discovery.stop()
    assert discovery.rejected.count == 7
    assert discovery.counters()["bad signature"] == 1


@pytest.mark.parametrize("url", [REDIS, NATS])
async def test_unreachable_broker_does_not_stop_anything(
    url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker that is down: start returns, a warning says so, stop is prompt."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = url.replace("6379", str(port)).replace("4222", str(port))
    discovery = broker_discovery(fast(dead))
    await asyncio.wait_for(discovery.start(RecordingEvents()), 1)
    await wait_until(lambda: any("retrying" in r.message for r in caplog.records), 6,
                     "a warning about the broker")
    await asyncio.wait_for(discovery.stop(), 3)


@pytest.mark.parametrize(("config", "field"), [
    ({"url": "http://x"}, "url"),
    ({"scope": "a b"}, "scope"),
    ({"interval": -1.0}, "interval"),
    ({"interval": 1.0, "expiry": 1.5}, "expiry"),
])
def test_bad_settings_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        BrokerSettings.from_config(config)
    assert caught.value.field == field



@pytest.mark.parametrize("url", [REDIS, NATS])
async def test_wildcard_addresses_are_announced_with_the_ip_that_reaches_the_broker(
    url: str,
) -> None:
    service_or_skip("Redis" if url == REDIS else "NATS", 6379 if url == REDIS else 4222)
    settings = fast(url)
    a, b = broker_discovery(settings), broker_discovery(settings)
    a_events, b_events = RecordingEvents(listen=["tcp://0.0.0.0:7400"]), RecordingEvents()
    await a.start(a_events)
    await b.start(b_events)
    try:
        await wait_until(lambda: a_events.peer_id in b_events.found, 3, "finding the peer")
        assert b_events.found[a_events.peer_id].addresses == ("tcp://127.0.0.1:7400",)
    finally:
        await a.stop()
        await b.stop()
