"""mdns-discovery: the SDK discovery kit, silent and hostile services, over real mDNS.

Every test runs in a private network namespace (see tests/discovery/netns.py), so the
multicast never leaves this machine.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from p2phost_sdk import ConfigError, Identity, PresenceSigner
from p2phost_sdk.testing.discovery import DiscoveryConformance, RecordingEvents, wait_until
from tests.discovery.plugins import private_network, use_plugin_source

use_plugin_source("mdns-discovery")

from p2phost_mdns_discovery import (  # noqa: E402
    SERVICE_TYPE,
    MdnsDiscovery,
    MdnsSettings,
    instance_name,
    txt_properties,
)

__all__ = ["private_network"]
_scopes = itertools.count()


def fast(scope: str | None = None, **overrides: Any) -> MdnsSettings:
    """Loopback-only settings with the shortest TTL."""
    return MdnsSettings.from_config({"scope": scope or f"kit{next(_scopes)}",
                                     "interfaces": ["127.0.0.1"], "ttl": 2, **overrides})


@pytest.mark.usefixtures("private_network")
class TestMdnsConformance(DiscoveryConformance):
    found_within = 6.0
    lost_within = 6.0

    @pytest.fixture
    def discovery_factory(self) -> Callable[[], MdnsDiscovery]:
        settings = fast()
        return lambda: MdnsDiscovery(settings)


@pytest.fixture
async def responder(private_network: str) -> AsyncIterator[AsyncZeroconf]:
    """A bare zeroconf responder on loopback, to publish whatever a test wants."""
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    yield zc
    await zc.async_close()


def txt(identity: Identity, scope: str, addresses: list[str],
        lifetime: float = 600) -> dict[str, str]:
    """The TXT record ``identity`` signs for ``addresses`` in ``scope``."""
    return txt_properties(PresenceSigner(identity).sign(scope, addresses, lifetime=lifetime))


def service(name_id: str, props: dict[str, Any], ttl: int = 2) -> AsyncServiceInfo:
    return AsyncServiceInfo(SERVICE_TYPE, instance_name(name_id), port=7400, properties=props,
                            server=f"{name_id}.local.", parsed_addresses=["127.0.0.1"],
                            host_ttl=ttl, other_ttl=ttl)


async def test_dead_peer_is_lost_after_ttl_and_found_when_it_answers_again(
    responder: AsyncZeroconf,
) -> None:
    """No goodbye (SIGKILL): lost once its records expire; answering again, found again."""
    settings = fast("silent")
    discovery, events = MdnsDiscovery(settings), RecordingEvents()
    identity = Identity.generate()
    peer = identity.peer_id
    info = service(peer, txt(identity, "silent", ["tcp://127.0.0.1:7400"]))
    await discovery.start(events)
    try:
        await responder.async_register_service(info)
        await wait_until(lambda: peer in events.found, 6, "finding the peer")
        responder.zeroconf.registry.async_remove(info)  # it stops answering, says nothing
        took = await wait_until(lambda: peer in events.lost, 8, "losing the silent peer")
        assert took < settings.ttl + 4
        responder.zeroconf.registry.async_add(info)  # the partition heals
        await wait_until(lambda: peer in events.found, 8, "finding it again")
    finally:
        await discovery.stop()
    assert not events.violations


async def test_hostile_services_are_ignored_and_logged(
    responder: AsyncZeroconf, caplog: pytest.LogCaptureFixture,
) -> None:
    discovery, events = MdnsDiscovery(fast("hostile")), RecordingEvents()
    honest_key, victim_key = Identity.generate(), Identity.generate()
    honest = honest_key.peer_id
    keys = [Identity.generate() for _ in range(9)]
    ids = [k.peer_id for k in keys]
    forged = {**txt(keys[6], "hostile", ["tcp://127.0.0.1:1"]), "addr0": "tcp://127.0.0.1:66"}
    hostile = [
        service(ids[0], {"scope": "hostile", "addr0": "tcp://127.0.0.1:1"}),    # no id
        service(ids[1], {"id": "not-a-peer-id", "scope": "hostile",
                         "addr0": "tcp://127.0.0.1:1"}),
        service(ids[2], {**txt(keys[2], "hostile", ["tcp://127.0.0.1:1"]),
                         **{f"pad{i}": "x" * 200 for i in range(12)}}),  # 2.4 KB of TXT
        service(ids[3], txt(victim_key, "hostile", ["tcp://127.0.0.1:1"])),  # spoofed
        service(ids[4], txt(keys[4], "hostile", ["no url", "tcp://h:99999"])),
        service(ids[5], {**txt(keys[5], "hostile", []),
                         **{f"addr{i}": f"tcp://127.0.0.1:{i + 1}" for i in range(20)}}),
        service(ids[6], forged),                                     # altered after signing
        service(ids[7], {**txt(keys[7], "hostile", ["tcp://127.0.0.1:1"]), "sig": "AAAA"}),
        service(ids[8], txt(keys[8], "hostile", ["tcp://127.0.0.1:1"], lifetime=-120)),
    ]
    other_key = Identity.generate()
    other_scope = other_key.peer_id
    await discovery.start(events)
    try:
        for info in hostile:
            await responder.async_register_service(info)
        await responder.async_register_service(
            service(other_scope, txt(other_key, "other", ["tcp://127.0.0.1:2"])))
        await responder.async_register_service(
            service(honest, txt(honest_key, "hostile", ["tcp://0.0.0.0:7400"])))
        await wait_until(lambda: honest in events.found, 8, "the honest service")
        await wait_until(lambda: discovery.rejected.count >= len(hostile), 8, "rejections")
    finally:
        await discovery.stop()
    assert list(events.found) == [honest]
    counters = discovery.counters()
    assert counters["bad signature"] >= 2 and counters["expired"] >= 1, counters
    # The wildcard listen address becomes the service's own IP.
    assert events.found[honest].addresses == ("tcp://127.0.0.1:7400",)
    assert any("ignored announcement" in r.message for r in caplog.records)


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        MdnsSettings.from_config({"scope": "UPPER"})
    assert caught.value.field == "scope"
    with pytest.raises(ConfigError) as caught:
        MdnsSettings.from_config({"ttl": 1})
    assert caught.value.field == "ttl"
