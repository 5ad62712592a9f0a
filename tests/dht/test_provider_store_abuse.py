"""One peer must not be able to fill a node's provider store for good: add_provider
stores only the asking peer's own record, and no record that would outlive a day (one
peer filled a node's 1,024 topic keys and a topic's 20 slots with records of throwaway
keys signed for a century, and honest providers were refused for as long as it ran)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from p2phost_sdk import Identity, PresenceSigner, SignedPresence
from tests.dht.network import MemoryNetwork  # noqa: F401 - puts the plugin on sys.path

from p2phost_dht_discovery import PEER_SCOPE, Dht, RecordGate, encode, provider_scope  # isort: skip
from p2phost_dht_discovery._keys import key_hex, topic_key  # isort: skip

CENTURY = 100 * 365 * 86400.0


def _provider(signer: PresenceSigner, key: int, lifetime: float = 600.0) -> str:
    return encode(signer.sign(provider_scope(key), ["tcp://198.51.100.1:1"], lifetime=lifetime))


def _dht() -> Dht:
    signer = PresenceSigner(Identity.generate())

    def sign(scope: str, addresses: Sequence[str], lifetime: float) -> SignedPresence:
        return signer.sign(scope, addresses, lifetime=lifetime)

    class NoRpc:
        async def call(self, *args: object) -> dict[str, object]:
            raise ConnectionError("no network")

    return Dht(signer.peer_id, sign, NoRpc())


def _store(dht: Dht, sender: str, key: int, record: str) -> object:
    request = {"v": 2, "op": "add_provider", "key": key_hex(key), "record": record}
    return asyncio.run(dht.handle(sender, request))["stored"]


def test_a_peer_stores_only_its_own_provider_record() -> None:
    dht = _dht()
    key = topic_key("chat")
    attacker = PresenceSigner(Identity.generate())
    throwaway = [PresenceSigner(Identity.generate()) for _ in range(20)]
    assert [_store(dht, attacker.peer_id, key, _provider(s, key)) for s in throwaway] == \
        [False] * 20
    assert dht.providers.counters["not the sender's"] == 20
    honest = PresenceSigner(Identity.generate())
    assert _store(dht, honest.peer_id, key, _provider(honest, key)) is True
    assert [r.peer_id for r in dht.providers.get(key)] == [honest.peer_id]


def test_records_that_would_outlive_a_day_are_refused() -> None:
    dht = _dht()
    key = topic_key("chat")
    forever = PresenceSigner(Identity.generate())
    assert _store(dht, forever.peer_id, key, _provider(forever, key, CENTURY)) is False
    assert dht.providers.counters["lifetime too long"] == 1
    gate = RecordGate()
    record = forever.sign(PEER_SCOPE, ["tcp://198.51.100.1:1"], lifetime=CENTURY)
    assert gate.peer(encode(record)) is None
    assert gate.counters()["lifetime too long"] == 1
    # An hour (the default record-lifetime) is fine.
    assert gate.peer(encode(forever.sign(PEER_SCOPE, ["tcp://198.51.100.1:1"],
                                         lifetime=3600))) is not None


def test_record_lifetime_past_a_day_is_a_config_error() -> None:
    import pytest
    from p2phost_dht_discovery._plugin import settings_of

    from p2phost_sdk import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings_of("dht-discovery", {"record-lifetime": 2 * 86400.0})
    assert "record-lifetime" in str(caught.value)


def test_one_peer_provides_a_bounded_number_of_topic_keys() -> None:
    dht = _dht()
    flooder = PresenceSigner(Identity.generate())
    stored = [_store(dht, flooder.peer_id, topic_key(f"junk-{i}"),
                     _provider(flooder, topic_key(f"junk-{i}"))) for i in range(100)]
    assert sum(1 for s in stored if s) == dht.providers.max_per_peer
    assert dht.providers.counters["peer full"] == 100 - dht.providers.max_per_peer
    honest = PresenceSigner(Identity.generate())
    weather = topic_key("weather")
    assert _store(dht, honest.peer_id, weather, _provider(honest, weather)) is True
    # A provider's renewal of a key it holds is not a new key.
    key = topic_key("junk-0")
    assert _store(dht, flooder.peer_id, key, _provider(flooder, key)) is True
