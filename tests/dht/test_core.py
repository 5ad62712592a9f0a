"""The DHT's parts without a network: routing table bounds, flooding caps, record checks."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from dataclasses import replace

from p2phost_sdk import Identity, PresenceSigner, SignedPresence
from tests.dht.network import MemoryNetwork  # noqa: F401 - puts the plugin on sys.path

from p2phost_dht_discovery import (  # isort: skip
    PEER_SCOPE, RecordGate, RoutingTable, TableLimits, encode, peer_key, provider_scope,
)
from p2phost_dht_discovery._keys import bucket_index, networks  # isort: skip
from p2phost_dht_discovery._limits import RateLimit  # isort: skip
from p2phost_dht_discovery._records import ProviderStore  # isort: skip


def record(address: str = "tcp://198.51.100.7:4001", *, identity: Identity | None = None,
           lifetime: float = 60.0, scope: str = PEER_SCOPE) -> SignedPresence:
    signer = PresenceSigner(identity or Identity.generate())
    return signer.sign(scope, [address], lifetime=lifetime)


def test_buckets_hold_k_and_the_rest_wait_as_replacements() -> None:
    table = RoutingTable(Identity.generate().peer_id, TableLimits(k=4))
    records = [record(f"tcp://10.{i}.0.1:1") for i in range(200)]
    for r in records:
        table.add(r, alive=True)
    for bucket in table.buckets:
        assert len(bucket.entries) <= 4 and len(bucket.replacements) <= 4
    full = next(b for b in table.buckets if b.replacements)
    victim = full.entries[-1].peer_id
    spare = full.replacements[-1].peer_id
    assert not table.failed(victim)  # one failure is not enough
    assert table.failed(victim)
    assert victim not in table and spare in table
    assert table.counters["evicted"] == 1


def test_a_flood_of_ids_from_one_prefix_is_capped() -> None:
    table = RoutingTable(Identity.generate().peer_id)
    for i in range(1000):
        table.add(record(f"tcp://203.0.113.{i % 250}:4001"), alive=True)
    assert len(table) == 10  # prefix_per_table
    assert table.counters["prefix cap"] >= 900
    per_bucket = [sum(1 for e in b.entries) for b in table.buckets]
    assert max(per_bucket) <= 2
    # Honest peers elsewhere still get in.
    assert table.add(record("tcp://192.0.2.1:4001"), alive=True)


def test_networks() -> None:
    assert networks(["tcp://203.0.113.9:1"]) == ("203.0.113.0/24",)
    assert networks(["tcp://[2001:db8:1:2::5]:1"]) == ("2001:db8:1::/48",)
    assert networks(["tcp://127.0.0.1:1"]) == ()
    assert networks(["mem://alice"]) == ("alice",)
    assert networks(["tcp://127.0.0.1:1", "tcp://203.0.113.9:1", "quic://203.0.113.7:2"]) == (
        "203.0.113.0/24",)


def signed(addresses: list[str]) -> SignedPresence:
    return PresenceSigner(Identity.generate()).sign(PEER_SCOPE, addresses, lifetime=60.0)


def test_a_fake_first_address_does_not_escape_the_cap() -> None:
    # Each record names another network first; the one it is really in (dialled next)
    # is the same for all. Counted by the first address alone they took 128 places.
    table = RoutingTable(Identity.generate().peer_id)
    for i in range(1000):
        table.add(signed([f"tcp://198.{i // 250}.{i % 250}.1:1", f"tcp://h{i}.invalid:1",
                          "tcp://127.0.0.1:1", f"tcp://203.0.113.{i % 250}:4001"]),
                  alive=True)  # and no connection address to go by
    assert len(table) == 10
    assert table.counters["prefix cap"] >= 900
    # An address past the fourth is never dialled: it takes no room.
    assert table.add(signed([*(f"tcp://192.0.2.{n}:1" for n in range(4)),
                             "tcp://203.0.113.9:1"]), alive=True)


def test_a_connected_peer_counts_where_its_connection_comes_from() -> None:
    # Records that lie about their network (each its own /24), all from one /24.
    source = {}
    table = RoutingTable(Identity.generate().peer_id, source=lambda peer: source[peer])
    for i in range(1000):
        liar = signed([f"tcp://198.{i // 250}.{i % 250}.1:4001"])
        source[liar.peer_id] = f"tcp://203.0.113.{i % 250}:{40000 + i}"
        table.add(liar, alive=True)
    assert len(table) == 10
    assert table.counters["prefix cap"] >= 900
    # One that lists that /24 but connects from elsewhere gets in; loopback is exempt.
    honest, local = signed(["tcp://203.0.113.1:4001"]), signed(["tcp://203.0.113.2:4001"])
    source[honest.peer_id], source[local.peer_id] = "tcp://192.0.2.1:5000", "tcp://[::1]:5000"
    assert table.add(honest, alive=True) and table.add(local, alive=True)
    # Unknown connection (the Rpc cannot tell): the record's addresses count.
    source[(odd := signed(["tcp://203.0.113.3:4001"])).peer_id] = ""
    assert not table.add(odd, alive=True)


def test_bucket_index_is_the_shared_prefix_length() -> None:
    assert bucket_index(0b1000 << 252, 0) == 0
    assert bucket_index(5, 5 ^ 1) == 255


def test_a_forged_record_is_refused_and_counted() -> None:
    gate = RecordGate()
    victim, attacker = Identity.generate(), Identity.generate()
    genuine = record(identity=victim)
    # The attacker's signature under the victim's id.
    forged = victim.peer_id + encode(record("tcp://203.0.113.66:1", identity=attacker))[52:]
    assert gate.peer(forged) is None
    assert gate.counters()["bad signature"] == 1
    assert gate.peer(forged) is None  # a repeat is refused again (from memory) and counted
    assert gate.counters()["bad signature"] == 2
    assert gate.peer(encode(genuine)) == genuine
    tampered = replace(genuine, addresses=("tcp://203.0.113.66:1",))
    # Same sequence, other addresses: refused (counted as conflicting with the newest),
    # and what the caller gets is the genuine record, never the tampered addresses.
    assert gate.peer(encode(tampered)) == genuine
    assert gate.counters()["stale"] == 1
    assert gate.peer(encode(replace(tampered, sequence=genuine.sequence + 1))) is None
    assert gate.counters()["bad signature"] == 3
    assert gate.peer(encode(genuine)[:-8]) is None  # truncated
    assert gate.peer({"id": victim.peer_id}) is None  # version 1's form
    assert gate.counters()["malformed"] == 2


def test_expired_and_replayed_records_are_refused() -> None:
    identity = Identity.generate()
    signer = PresenceSigner(identity)
    old = signer.sign(PEER_SCOPE, ["tcp://198.51.100.7:1"], lifetime=60)
    new = signer.sign(PEER_SCOPE, ["tcp://198.51.100.8:1"], lifetime=60)
    later = RecordGate(clock=lambda: time.time() + 3600)
    assert later.peer(encode(old)) is None
    assert later.counters()["expired"] == 1
    gate = RecordGate()
    assert gate.peer(encode(new)) == new
    assert gate.peer(encode(old)) == new  # an older copy yields the newest known
    assert gate.counters()["stale"] == 1
    other_scope = signer.sign("lan", ["tcp://198.51.100.7:1"], lifetime=60)
    # The scope is not sent: a record signed for another one does not verify as "dht".
    assert gate.peer(encode(other_scope)) is None
    assert gate.counters()["bad signature"] == 1
    assert gate.peer(encode(new), expect=Identity.generate().peer_id) is None
    assert gate.counters()["wrong scope or peer"] == 1


def test_a_record_verified_once_is_not_verified_again_until_it_expires() -> None:
    now = [time.time()]
    gate = RecordGate(clock=lambda: now[0])
    genuine = record(lifetime=60)
    assert gate.peer(encode(genuine)) == genuine
    assert gate.known(encode(genuine)) == genuine  # the repeat: no decoding, no verifying
    assert gate.known(encode(replace(genuine, addresses=("tcp://203.0.113.66:1",)))) is None
    assert gate.known(encode(replace(genuine, sequence=genuine.sequence + 1))) is None
    now[0] += 3600  # the remembered record expired: no path may still hand it out
    assert gate.known(encode(genuine)) is None
    assert gate.peer(encode(genuine)) is None
    assert gate.check(genuine) is None
    assert gate.counters()["expired"] == 2


def test_provider_records_are_bounded_and_bound_to_their_key() -> None:
    store = ProviderStore(max_keys=2, max_per_key=3)
    key = peer_key("some topic")
    good = [record(scope=provider_scope(key)) for _ in range(4)]
    assert [store.add(key, encode(r)) for r in good] == [True, True, True, False]
    assert store.counters["key full"] == 1
    assert not store.add(key + 1, encode(good[0]))  # a record for another key
    assert store.add(key + 2, encode(record(scope=provider_scope(key + 2))))
    assert not store.add(key + 3, encode(record(scope=provider_scope(key + 3))))
    assert store.counters["store full"] == 1
    assert len(store.get(key)) == 3


def test_rate_limit_per_peer() -> None:
    now = [0.0]
    limit = RateLimit(10, 5, peers=2, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(6)] == [True] * 5 + [False]
    assert limit.allow("b")
    now[0] = 0.5
    assert sum(limit.allow("a") for _ in range(10)) == 5
    assert limit.refused == 6


def test_config_mistakes_name_the_field() -> None:
    import pytest
    from p2phost_dht_discovery._plugin import settings_of

    from p2phost_sdk import ConfigError

    settings = settings_of("dht-discovery", {"k": 8, "prefix-per-table": 3})
    assert settings.k == 8 and settings.limits.prefix_per_table == 3
    for bad in ({"find": ["not-a-peer-id"]}, {"bootstrap": ["203.0.113.5:7400"]},
                {"alpha": 0}, {"request-timeout": 0.0}):
        with pytest.raises(ConfigError) as caught:
            settings_of("dht-discovery", bad)
        assert next(iter(bad)) in str(caught.value)


def test_a_replacement_kept_unverified_is_verified_before_it_is_promoted() -> None:
    gate = RecordGate()
    own = Identity.generate().peer_id
    table = RoutingTable(own, TableLimits(k=1), check=gate.check)
    genuine: list[SignedPresence] = []
    while len(genuine) < 3:  # three peers in the far half of the key space: one bucket
        candidate = record(f"tcp://10.{len(genuine)}.0.1:1")
        if bucket_index(peer_key(own), peer_key(candidate.peer_id)) == 0:
            genuine.append(candidate)
    first, second, third = genuine
    assert table.add(first, alive=True)
    assert not table.wants(second.peer_id)  # the bucket is full: no need to verify now
    assert not table.add(third, alive=True, verified=False)
    assert gate.counters()["accepted"] == 0  # nothing verified yet
    table.remove(first.peer_id)
    assert third.peer_id in table  # the replacement, verified on promotion
    assert gate.counters()["accepted"] == 1
    forged = replace(second, addresses=("tcp://203.0.113.66:1",))
    assert not table.add(forged, alive=True, verified=False)
    table.remove(third.peer_id)
    assert forged.peer_id not in table  # refused on promotion, never served
    assert table.counters["replacement refused"] == 1
    assert gate.counters()["bad signature"] == 1


def test_malformed_records_are_refused_with_asserts_stripped_too() -> None:
    # decode parses what any peer sends: its checks must hold under ``python -O``.
    wire = encode(record())
    body = base64.b64decode(wire[52:])
    short_signature = wire[:52] + base64.b64encode(body[:-4]).decode()
    bad_peer = "!" * 52 + wire[52:]
    code = ("import sys\n"
            "from p2phost_sdk import AnnouncementError\n"
            "from p2phost_dht_discovery._records import decode\n"
            "for raw in sys.argv[1:]:\n"
            "    try:\n"
            "        decode(raw)\n"
            "    except AnnouncementError:\n"
            "        continue\n"
            "    sys.exit('accepted: ' + raw[:60])\n")
    done = subprocess.run([sys.executable, "-O", "-c", code, short_signature, bad_peer],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_newer_record_heard_elsewhere_does_not_move_a_contact_off_its_connection() -> None:
    # Ten contacts connected from one /24 fill its cap. Each then signs a newer record
    # naming loopback only (or any other network), which this node hears from a third
    # peer (not alive: no connection to go by). Re-placed by that record, each counted
    # nowhere: the /24's room came back, and ten more got in, again and again.
    source: dict[str, str] = {}
    table = RoutingTable(Identity.generate().peer_id, source=lambda peer: source.get(peer, ""))
    signers = []
    for i in range(1000):
        signer = PresenceSigner(Identity.generate())
        source[signer.peer_id] = f"tcp://203.0.113.{i % 250}:4001"
        if table.add(signer.sign(PEER_SCOPE, [source[signer.peer_id]], lifetime=60.0),
                     alive=True):
            signers.append(signer)
    assert len(signers) == len(table) == 10
    for signer in signers:
        table.add(signer.sign(PEER_SCOPE, ["tcp://127.0.0.1:4001"], lifetime=60.0),
                  alive=False)
    newcomer = signed(["tcp://203.0.113.99:4001"])
    source[newcomer.peer_id] = "tcp://203.0.113.99:4001"
    assert not table.add(newcomer, alive=True)
    assert all(table.get(s.peer_id).networks == ("203.0.113.0/24",)  # type: ignore[union-attr]
               for s in signers)
