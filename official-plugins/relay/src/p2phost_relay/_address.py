"""Relay addresses: the relay's own address, ``/p2p-circuit``, and the peer behind it.

``relay+tcp://203.0.113.5:7400/p2p-circuit/PEERID`` reaches PEERID through the relay
listening at ``tcp://203.0.113.5:7400`` (libp2p writes it
``/ip4/203.0.113.5/tcp/7400/p2p/RELAY/p2p-circuit/p2p/PEERID``). The scheme is the relay
address's own scheme with ``relay+`` in front, so the host picks this plugin for it. A
node listens with the same address without the peer: ``relay+tcp://203.0.113.5:7400``.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2phost_sdk import is_peer_id

from ._errors import RelayAddressError

PREFIX = "relay+"
CIRCUIT = "/p2p-circuit"
#: The relay address schemes this plugin serves (one per transport a relay may listen on).
SCHEMES = ("relay+tcp", "relay+quic", "relay+ws", "relay+wss", "relay+mem")
_EXAMPLE = "relay+tcp://203.0.113.5:7400/p2p-circuit/PEERID"


@dataclass(frozen=True)
class RelayAddress:
    """Where the relay is, and (for dialling) which peer behind it."""

    relay: str
    target: str | None = None

    def __str__(self) -> str:
        tail = CIRCUIT + ("" if self.target is None else "/" + self.target)
        return PREFIX + self.relay + tail

    def of(self, peer_id: str) -> RelayAddress:
        """The address of ``peer_id`` behind the same relay."""
        return RelayAddress(self.relay, peer_id)


def parse(address: str, *, target: bool) -> RelayAddress:
    """``address`` split; RelayAddressError saying what is wrong. ``target``: a peer is
    required."""
    # A scheme is case-insensitive (RFC 3986), as the host reads it when it picks this
    # plugin for RELAY+TCP://...: the relay's own address is dialled in lower case.
    scheme, sep, rest = address.partition("://")
    written = scheme.lower() + sep + rest
    if not written.startswith(PREFIX) or not sep:
        raise RelayAddressError(address, f"expected e.g. {_EXAMPLE}", expected=_EXAMPLE)
    inner, _, tail = written[len(PREFIX):].partition(CIRCUIT)
    scheme, _, rest = inner.partition("://")
    if PREFIX + scheme not in SCHEMES or not rest.strip("/"):
        raise RelayAddressError(
            address, "the relay's own address must be one of "
            f"{', '.join(s[len(PREFIX):] for s in SCHEMES)}://..., e.g. {_EXAMPLE}",
            expected=_EXAMPLE)
    peer = tail.strip("/") or None
    if peer is not None and not is_peer_id(peer):
        raise RelayAddressError(address, f"{peer!r} after {CIRCUIT}/ is not a peer id (as "
                                "`p2phost id` prints it)", expected=_EXAMPLE)
    if target and peer is None:
        raise RelayAddressError(address, f"it names no peer after {CIRCUIT}/",
                                expected=_EXAMPLE)
    return RelayAddress(inner.rstrip("/"), peer)
