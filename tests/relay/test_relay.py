"""The relay plugin in real nodes: a node that cannot be dialled is reached through a relay
that sees only ciphertext, and the relay's limits hold."""

from __future__ import annotations

import asyncio
import base64

import pytest

from p2phost_sdk import PeerUnavailable, RemoteError
from p2phost_sdk.testing.discovery import wait_until
from tests.relay.network import relay_network

SECRET = "attack at dawn, the password is swordfish"


async def reserved(service: object, timeout: float = 10) -> None:
    await wait_until(lambda: any(r.relay_peer for r in service.reservations),  # type: ignore[attr-defined]
                     timeout, "the reservation on the relay")


@pytest.mark.parametrize("secure", [True, False])
async def test_a_node_that_listens_nowhere_is_reached_through_the_relay(secure: bool) -> None:
    async with relay_network() as make:
        relay, hop = await make({"serve": True}, secure=secure)
        relay_at = "relay+" + relay.addresses[0]
        # The target listens nowhere but on the relay: nobody can dial it directly.
        # No upgrade here: this test reads what crosses the relay.
        target, behind = await make({"upgrade": False}, listen=(relay_at,), mem=False,
                                    secure=secure)
        await reserved(behind)
        [address] = [a for a in target.addresses if a.startswith("relay+")]
        assert address == f"{relay_at}/p2p-circuit/{target.peer_id}"
        seen: list[bytes] = []
        hop.tap.append(lambda data: seen.append(base64.b64decode(data)))

        dialler, _ = await make(secure=secure)
        assert await dialler.connect(address) == target.peer_id
        reply = await dialler.request(target.peer_id, "echo", {"text": SECRET}, timeout=10)
        assert reply == {"text": SECRET}
        big = {"pad": "x" * 1_000_000}  # a large frame fits a circuit, base64 and all
        assert await dialler.request(target.peer_id, "echo", big, timeout=30) == big
        [peer] = [p for p in dialler.peers() if p.peer_id == target.peer_id]
        assert peer.address == address
        assert peer.security == ("noise" if secure else "none")
        relayed = b"".join(seen)
        assert relayed, "nothing was relayed"
        # With a security plugin the relay forwards ciphertext only; without one the
        # same capture shows the message, so the capture itself is sound.
        assert (SECRET.encode() in relayed) is (not secure)
        assert (target.peer_id.encode() in relayed) is (not secure)  # the hello is sealed too
        assert hop.hop.counters["circuits opened"] == 1
        assert behind.counters["circuits accepted"] == 1


async def test_the_relay_refuses_what_its_limits_do_not_allow_and_counts_it() -> None:
    async with relay_network() as make:
        relay, hop = await make({"serve": True, "reservations": 1, "circuit-bytes": 20_000})
        relay_at = "relay+" + relay.addresses[0]
        first, first_service = await make({"upgrade": False}, listen=(relay_at,), mem=False)
        await reserved(first_service)
        second, second_service = await make(listen=(relay_at,), mem=False)
        await wait_until(lambda: second_service.counters["reservation failed"] >= 1, 10,
                         "the second reservation refused")
        assert hop.hop.counters["refused: reservation limit"] >= 1

        dialler, _ = await make()
        with pytest.raises(PeerUnavailable, match="no reservation"):
            await dialler.connect(f"{relay_at}/p2p-circuit/{second.peer_id}")
        assert await dialler.connect(f"{relay_at}/p2p-circuit/{first.peer_id}") \
            == first.peer_id
        # Past its bytes the relay closes the circuit at both ends.
        with pytest.raises(Exception):  # noqa: B017 - the connection goes mid-request
            for _ in range(20):
                await dialler.request(first.peer_id, "echo", {"pad": "x" * 2_000}, timeout=5)
        await wait_until(lambda: hop.hop.counters["closed: byte limit"] == 1, 10,
                         "the circuit closed at its byte limit")
        await wait_until(lambda: first.peer_id not in {p.peer_id for p in dialler.peers()},
                         10, "the dialler lost the relayed peer")
        assert hop.hop.active_circuits() == 0


async def test_a_node_that_does_not_relay_refuses_with_the_fix() -> None:
    async with relay_network() as make:
        plain, _ = await make()
        _, behind = await make(listen=("relay+" + plain.addresses[0],), mem=False)
        await wait_until(lambda: behind.counters["reservation failed"] >= 1, 10,
                         "the reservation refused")
        dialler, _ = await make()
        with pytest.raises(PeerUnavailable, match="serve = true"):
            await dialler.connect(f"relay+{plain.addresses[0]}/p2p-circuit/{plain.peer_id}")


async def test_a_relayed_listen_address_is_said_once_a_relay_grants_it() -> None:
    # What `p2phost run` prints as "listening on": a node that does not relay grants no
    # reservation, so its relayed address is never said; a relay that serves says it.
    async with relay_network() as make:
        plain, _ = await make()
        refused, refused_service = await make(listen=("relay+" + plain.addresses[0],),
                                              mem=False)
        said: list[str] = []
        refused.when_listening(said.append)
        await wait_until(lambda: refused_service.counters["reservation failed"] >= 2, 10,
                         "the reservation refused twice")
        assert said == []
        relay, _ = await make({"serve": True})
        target, _ = await make(listen=("relay+" + relay.addresses[0],), mem=False)
        target.when_listening(said.append)
        await wait_until(lambda: said != [], 10, "the relayed address said")
        assert said == target.addresses
        assert said == [f"relay+{relay.addresses[0]}/p2p-circuit/{target.peer_id}"]


async def test_malformed_and_stray_relay_messages_are_dropped_and_counted() -> None:
    async with relay_network() as make:
        relay, hop = await make({"serve": True}, max_frame_size=64 * 1024)
        attacker, _ = await make(max_frame_size=64 * 1024)
        await attacker.connect(relay.addresses[0])
        with pytest.raises(RemoteError, match="malformed"):
            await attacker.request(relay.peer_id, "relay", {"op": "nonsense"}, timeout=5)
        with pytest.raises(RemoteError, match="malformed"):
            await attacker.request(relay.peer_id, "relay",
                                   {"op": "connect", "target": 7, "circuit": "c"}, timeout=5)
        oversized = "A" * (hop.circuit_frame * 4 // 3 + 8)  # still fits one message
        for body in ({"op": "data", "circuit": "x" * 100, "data": ""},
                     {"op": "data", "circuit": "c1", "data": oversized},
                     {"op": "data", "circuit": "nobody", "data": "AAAA"},
                     {"op": "close", "circuit": 5}):
            await attacker.send(relay.peer_id, "relay", body)
        await wait_until(lambda: hop.counters["malformed data"] == 2
                         and hop.counters["unknown circuit"] == 1
                         and hop.counters["malformed close"] == 1, 10, "all counted")
        assert hop.hop.active_circuits() == 0
        # The relay still serves honest peers.
        _, behind = await make(listen=("relay+" + relay.addresses[0],), mem=False)
        await reserved(behind)


async def test_a_relayed_peer_that_can_dial_the_dialler_upgrades_to_a_direct_connection(
) -> None:
    async with relay_network() as make:
        relay, hop = await make({"serve": True})
        relay_at = "relay+" + relay.addresses[0]
        target, behind = await make(listen=(relay_at,), mem=False)
        await reserved(behind)
        dialler, _ = await make()  # listens on mem://: dialable
        relayed = f"{relay_at}/p2p-circuit/{target.peer_id}"
        assert await dialler.connect(relayed) == target.peer_id

        def direct() -> bool:
            found = [p for p in dialler.peers() if p.peer_id == target.peer_id]
            return bool(found) and found[0].address.startswith("mem://")
        await wait_until(direct, 15, "the direct connection")
        await wait_until(lambda: hop.hop.active_circuits() == 0, 10, "the circuit closed")
        await wait_until(lambda: behind.counters["upgraded to direct"] == 1, 10, "counted")
        reply = await dialler.request(target.peer_id, "echo", {"text": "direct"}, timeout=10)
        assert reply == {"text": "direct"}
        [peer] = [p for p in dialler.peers() if p.peer_id == target.peer_id]
        assert peer.address.startswith("mem://") and peer.security == "noise"


async def test_a_client_node_pulls_its_frames_and_a_client_that_stops_is_forgotten(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import p2phost_relay._plugin as relay_plugin  # its path is set by tests/relay/network.py

    monkeypatch.setattr(relay_plugin, "SWEEP", 0.2)
    async with relay_network() as make:
        relay, hop = await make({"serve": True, "request-timeout": 1.0})
        relay_at = "relay+" + relay.addresses[0]
        target, behind = await make(listen=(relay_at,), mem=False)
        await reserved(behind)
        # A client node (p2phost ping/send) is sent only replies: it pulls.
        client, _ = await make(mem=False, client=True)
        assert await client.connect(f"{relay_at}/p2p-circuit/{target.peer_id}") \
            == target.peer_id
        for n in range(3):
            assert await client.request(target.peer_id, "echo", {"n": n}, timeout=10) \
                == {"n": n}
        assert len(hop.forwards.pullers) == 1
        # A refusal reaches a client with its reason, by its next pull.
        other, other_relay = await make(listen=(relay_at,), mem=False)
        await reserved(other_relay)

        async def refuse(sender: str, body: dict[str, object]) -> dict[str, object]:
            raise RuntimeError("not taking calls")
        other_relay.on_incoming = refuse  # type: ignore[method-assign]
        with pytest.raises(PeerUnavailable, match=r"refused by the target: .*not taking calls"):
            await client.connect(f"{relay_at}/p2p-circuit/{other.peer_id}")
        await wait_until(lambda: len(hop.forwards.pullers) == 1, 10, "the refused one gone")
        # A client killed mid-way says nothing (a relay is not told a client left): the
        # relay forgets its circuit once it stops pulling.
        for task in asyncio.all_tasks():
            if task.get_name().startswith("relay pull"):
                task.cancel()
        await wait_until(lambda: hop.hop.counters["closed: puller gone"] == 1, 10,
                         "the circuit of a client that stopped pulling closed")
        assert hop.hop.active_circuits() == 0 and not hop.forwards.pullers
