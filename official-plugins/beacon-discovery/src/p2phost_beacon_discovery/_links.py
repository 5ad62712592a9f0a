"""The links beacons go out on: every interface that is up and can multicast.

Beacons are sent on each link separately, from that link's address and carrying only the
addresses reachable on it (RFC 6762 section 15 asks the same of mDNS), so a node on two
LANs is announced to each with the right address. Joining the group on each link by its
address also works on hosts without a default route, where letting the kernel choose
fails with "No such device".
"""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass

from p2phost_sdk import link_addresses

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000
#: The address of the fallback link: the routing table decides (hosts we cannot inspect).
ANY = "0.0.0.0"


@dataclass(frozen=True)
class Link:
    """One interface beacons go out on: its name and IPv4 address."""

    name: str
    ip: str
    loopback: bool = False


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))


def multicast_links() -> list[Link]:
    """Every interface that is up, can multicast and has an IPv4 address; loopback only
    when nothing else qualifies. Empty when the interfaces cannot be read (not Linux)."""
    found: list[Link] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            try:
                flags = struct.unpack_from("H", _ifreq(probe, _SIOCGIFFLAGS, name), 16)[0]
                ip = socket.inet_ntoa(_ifreq(probe, _SIOCGIFADDR, name)[20:24])
            except OSError:  # no IPv4 address, or an interface that vanished
                continue
            if flags & _IFF_UP and flags & _IFF_MULTICAST:
                found.append(Link(name, ip, loopback=bool(flags & _IFF_LOOPBACK)))
    outside = [link for link in found if not link.loopback]
    return outside or found


def addresses_on(link: Link, addresses: tuple[str, ...], *, strict: bool) -> tuple[str, ...]:
    """What to announce on ``link`` (as is when the routing table picks the link)."""
    return addresses if link.ip == ANY else link_addresses(addresses, link.ip, strict=strict)
