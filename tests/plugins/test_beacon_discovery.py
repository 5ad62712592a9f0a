"""beacon-discovery: the SDK discovery kit, the beacon format, and hostile datagrams."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2phost_sdk import AnnouncementError, ConfigError, Identity, PresenceSigner
from p2phost_sdk.testing.discovery import DiscoveryConformance, RecordingEvents, wait_until
from tests.discovery.plugins import private_network, use_plugin_source

use_plugin_source("beacon-discovery")

from p2phost_beacon_discovery import (  # noqa: E402
    Beacon,
    BeaconDiscovery,
    BeaconSettings,
    decode,
    encode,
    fits,
    scope_tag,
)

__all__ = ["private_network"]

_ports = itertools.count(20000 + os.getpid() % 20000)


def signed(scope: str, addresses: tuple[str, ...], *, identity: Identity | None = None,
           goodbye: bool = False, lifetime: float = 5.0) -> bytes:
    """A beacon signed by ``identity`` (a new one by default)."""
    signer = PresenceSigner(identity or Identity.generate())
    return encode(Beacon.of(signer.sign(scope, addresses, lifetime=lifetime, goodbye=goodbye)))


def fast(scope: str = "kit", **overrides: Any) -> BeaconSettings:
    """Settings with short timings, on a port of their own."""
    values: dict[str, Any] = {"scope": scope, "port": next(_ports), "interval": 0.2,
                              "expiry": 1.0, **overrides}
    return BeaconSettings.from_config(values)


@pytest.mark.usefixtures("private_network")
class TestBeaconConformance(DiscoveryConformance):
    found_within = 3.0
    lost_within = 3.0

    @pytest.fixture
    def discovery_factory(self) -> Callable[[], BeaconDiscovery]:
        settings = fast()
        return lambda: BeaconDiscovery(settings)


def test_format_round_trip_signature_and_limits() -> None:
    signer = PresenceSigner(Identity.generate())
    record = signer.sign("chat", ("tcp://10.0.0.1:7400", "mem://x"), lifetime=5)
    beacon = decode(encode(Beacon.of(record)))
    assert beacon == Beacon.of(record) and beacon.presence("chat").check() == record
    with pytest.raises(AnnouncementError, match="bad signature"):
        beacon.presence("another-scope").check()
    bye = decode(encode(Beacon.of(signer.sign("chat", (), lifetime=5, goodbye=True))))
    assert bye.goodbye and bye.presence("chat").check()
    # Too many or too long addresses are left out rather than making an oversized beacon.
    assert len(fits(tuple(f"tcp://10.0.0.{i}:1" for i in range(40)))) == 16
    assert fits(("tcp://" + "a" * 300 + ":1", "tcp://b:1")) == ("tcp://b:1",)
    with pytest.raises(ValueError, match="do not fit"):
        encode(Beacon(scope_tag("chat"), signer.peer_id, ("tcp://" + "a" * 300 + ":1",), 1, 2,
                      bytes(64)))


@pytest.mark.parametrize(("config", "field"), [
    ({"scope": "Not Valid!"}, "scope"),
    ({"port": 0}, "port"),
    ({"group": "not-an-ip"}, "group"),
    ({"interface": "eth0"}, "interface"),
    ({"interval": 0.0}, "interval"),
    ({"interval": 2.0, "expiry": 3.0}, "expiry"),
])
def test_bad_settings_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        BeaconSettings.from_config(config)
    assert caught.value.field == field
    assert "[config.beacon-discovery]" in str(caught.value)


def _hostile_datagrams(scope: str) -> list[bytes]:
    good = signed(scope, ("tcp://127.0.0.1:9",))
    header, signature = good[:63], good[-64:]
    forged = bytearray(good)
    forged[-70] ^= 1  # one address byte changed: the signature no longer verifies
    return [
        b"",
        b"hello",
        os.urandom(200),
        b"P2PB" + os.urandom(60),                       # right magic, garbage after it
        good[:-3],                                      # truncated address
        good + b"\x00",                                 # stray bytes
        good[:4] + b"\x09" + good[5:],                  # unknown version
        header[:-1] + b"\xff" + signature,              # 255 addresses claimed
        header[:-1] + b"\x01" + b"\x05" + b"\xff\xfe\xfd\xfc\xfb" + signature,  # not UTF-8
        good + b"x" * 1400,                             # larger than any beacon
        bytes(forged),                                  # altered after signing
        good[:-64] + bytes(64),                         # no real signature
        signed(scope, ("tcp://127.0.0.1:9",), lifetime=-120),  # expired long ago
        signed(scope, ("evil",)),                       # signed, but not a URL
        signed(scope, ("tcp://a\nb:1",)),                # control character
        signed(scope, ("tcp://h:999999",)),              # port out of range
    ]


@pytest.mark.usefixtures("private_network")
async def test_hostile_datagrams_are_ignored_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = fast("hostile")
    discovery = BeaconDiscovery(settings)
    events = RecordingEvents()
    await discovery.start(events)
    try:
        junk = _hostile_datagrams("hostile")
        other_scope = signed("other", ("tcp://127.0.0.1:9",))
        identity = Identity.generate()
        honest = identity.peer_id
        wildcard = signed("hostile", ("tcp://0.0.0.0:7400",), identity=identity)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            for datagram in [*junk, other_scope, wildcard]:
                sender.sendto(datagram, (settings.group, settings.port))
        await wait_until(lambda: honest in events.found, 3, "the honest beacon")
        await wait_until(lambda: discovery.rejected.count >= len(junk) - 1, 3, "rejections")
    finally:
        await discovery.stop()
    # The empty datagram may be dropped by the kernel path; every other one is rejected.
    assert discovery.rejected.count in (len(junk) - 1, len(junk))
    assert list(events.found) == [honest]
    counters = discovery.counters()
    assert counters["bad signature"] == 2 and counters["expired"] == 1, counters
    # A wildcard address becomes the address the beacon came from.
    assert events.found[honest].addresses == ("tcp://127.0.0.1:7400",)
    warnings = [r for r in caplog.records if "ignored announcement from 127.0.0.1" in r.message]
    assert len(warnings) == 1, "one warning per sender per minute, the rest at debug level"


@pytest.mark.usefixtures("private_network")
async def test_silent_peer_expires_without_goodbye() -> None:
    """A peer that vanishes without a goodbye (SIGKILL) is lost after ``expiry``."""
    settings = fast("silent", expiry=0.6)
    discovery = BeaconDiscovery(settings)
    events = RecordingEvents()
    await discovery.start(events)
    try:
        ghost = Identity.generate()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            sender.sendto(signed("silent", ("tcp://127.0.0.1:9",), identity=ghost),
                          (settings.group, settings.port))
        found = await wait_until(lambda: ghost.peer_id in events.found, 2, "the one beacon")
        took = found + await wait_until(lambda: ghost.peer_id in events.lost, 3, "expiry")
        assert 0.2 < took < 3.0
    finally:
        await discovery.stop()


async def test_plugin_loads_from_its_wheel(make_project: Callable[..., Path]) -> None:
    """The real wheel, loaded by the host's plugin manager, yields a configured instance."""
    from p2phost._plugins import PluginManager
    from p2phost._project import Project

    root = make_project(["beacon-discovery"],
                       config={"beacon-discovery": {"scope": "app", "interval": 0.5}})
    parts = PluginManager(Project(root)).load().build(Identity.generate().peer_id, 1 << 20)
    [discovery] = parts.discovery
    assert type(discovery).__name__ == "BeaconDiscovery"
    assert discovery.settings.scope == "app"  # type: ignore[attr-defined]
    await asyncio.sleep(0)
