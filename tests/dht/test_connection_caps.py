"""dht-discovery in real nodes: the flooding caps place a contact by where its connection
comes from, not by the addresses its own record claims."""

from __future__ import annotations

from p2phost_sdk.testing.discovery import wait_until
from tests.dht.test_idle import dht_nodes

from p2phost_dht_discovery._keys import networks  # isort: skip


async def test_a_contact_counts_in_its_connections_network_not_its_records() -> None:
    async with dht_nodes() as make:
        boot, service = await make({"idle-timeout": 0})
        # Its record says it is in 198.51.100.0/24; it connects from somewhere else.
        liar, _ = await make({"bootstrap": [boot.addresses[0]], "idle-timeout": 0,
                              "advertise": ["tcp://198.51.100.7:4001"]})
        assert service.dht is not None
        table = service.dht.table
        await wait_until(lambda: table.get(liar.peer_id) is not None, 20,
                         "the peer in the bootstrap node's routing table")
        entry = table.get(liar.peer_id)
        assert entry is not None and entry.record.addresses == ("tcp://198.51.100.7:4001",)
        came_from = next(p.address for p in boot.peers() if p.peer_id == liar.peer_id)
        assert (entry.seen_at, entry.networks) == (came_from, networks([came_from]))
        assert "198.51.100.0/24" not in entry.networks
