"""The upgrade to a direct connection: a peer reached through a relay that the other end
can dial directly is dialled, and the circuit closed (libp2p's connection reversal).

The dialler of a circuit sends its own listen addresses with ``connect``; the relay passes
them on with ``incoming``. Once the circuit's handshake is done, the end behind the relay
dials them. The host keeps one connection per peer (docs/wire.md 4.3): when it keeps the
direct one, the circuit is retired at once; when it keeps the circuit, closing the
circuit and dialling again leaves the direct one. The dialler does not dial the relayed
address again while it is connected directly (its redial loops see the peer connected).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from p2phost_sdk import Messenger, is_wildcard

if TYPE_CHECKING:
    from ._circuit import Circuit

log = logging.getLogger("p2phost.plugin.relay")
#: Addresses offered for an upgrade, and the longest one.
MAX_ADDRESSES, MAX_LENGTH = 8, 200


def own_addresses(node: Messenger) -> list[str]:
    """Where this node can be dialled directly: its listen addresses, relayed and wildcard
    ones left out (the host's node has them; a Messenger without them offers none)."""
    listed = getattr(node, "addresses", ())
    return [a for a in listed if isinstance(a, str) and not a.startswith("relay+")
            and not is_wildcard(a) and len(a) <= MAX_LENGTH][:MAX_ADDRESSES]


def offered(value: Any) -> list[str]:
    """The addresses in a ``connect`` or ``incoming`` body, bounded; [] when malformed."""
    if not isinstance(value, list):
        return []
    return [a for a in value[:MAX_ADDRESSES]
            if isinstance(a, str) and "://" in a and not a.startswith("relay+")
            and len(a) <= MAX_LENGTH]


async def upgrade(node: Messenger, circuit: Circuit, peer_id: str, addresses: list[str],
                  timeout: float) -> bool:
    """Dial ``peer_id`` at ``addresses``; on success close ``circuit``. Whether it did."""
    for address in addresses:
        try:
            async with asyncio.timeout(timeout):
                reached = await node.connect(address)
        except Exception as exc:  # not dialable from here: the circuit stays
            log.debug("no direct connection to %s at %s: %s", peer_id, address, exc)
            continue
        if reached != peer_id:
            log.debug("%s answers at %s, not %s", reached, address, peer_id)
            continue
        await circuit.close()
        if await _settled(node, peer_id, address, timeout):
            log.info("upgraded %s from a relayed to a direct connection (%s)", peer_id,
                     address)
            return True
        log.info("the direct connection to %s at %s did not last", peer_id, address)
        return False
    return False


async def _settled(node: Messenger, peer_id: str, address: str, timeout: float) -> bool:
    """Whether ``peer_id`` stays connected directly. The host may have retired the direct
    connection in favour of the circuit just closed: then dial again, now with no rival."""
    loop = asyncio.get_running_loop()
    deadline, steady = loop.time() + timeout, 0
    while loop.time() < deadline:
        found = [p for p in node.peers() if p.peer_id == peer_id]
        if found and not found[0].address.startswith("relay+"):
            steady += 1
            if steady >= 5:  # 0.5 s without being retired
                return True
        else:
            steady = 0
            if not found:
                try:
                    async with asyncio.timeout(max(0.1, deadline - loop.time())):
                        await node.connect(address)
                except Exception as exc:
                    log.debug("dialling %s again at %s failed: %s", peer_id, address, exc)
        await asyncio.sleep(0.1)
    return False
