"""Private networks for discovery tests: Linux network namespaces joined by a bridge.

Everything lives inside namespaces this module creates (the bridge too, in a "switch"
namespace), so the machine's own network is never touched and deleting the namespaces
removes every interface. Addresses are private ones (10.77.0.0/24) assigned here.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

_CLONE_NEWNET = 0x40000000
_counter = itertools.count()
SUBNET = "10.77.0"


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install -y iproute2)"
    name = unique_name("probe")
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        return f"cannot create network namespaces: {exc.stderr.strip() or exc}"
    _ip("netns", "del", name, check=False)
    return None


def require_namespaces() -> None:
    """Skip (fail under CI=true) when network namespaces cannot be created."""
    reason = unavailable_reason()
    if reason is None:
        return
    message = f"needs network namespaces (root and iproute2): {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def unique_name(kind: str) -> str:
    """A name no other test run uses at the same time (pid + counter)."""
    return f"p2p{os.getpid() % 100000}{kind}{next(_counter)}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


@contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run this thread inside ``namespace`` (sockets made meanwhile live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, \
            open(f"/run/netns/{namespace}", "rb") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
        try:
            yield
        finally:
            libc.setns(home.fileno(), _CLONE_NEWNET)


@contextmanager
def loopback_network() -> Iterator[str]:
    """A fresh namespace whose loopback carries multicast; this thread runs inside it."""
    name = unique_name("lo")
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up", "multicast", "on")
        _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lo")
        with entered(name):
            yield name
    finally:
        _ip("netns", "del", name, check=False)


@dataclass
class Lan:
    """N hosts (namespaces) on one switch (a bridge in its own namespace)."""

    size: int
    prefix: str = field(default_factory=lambda: unique_name("n"))
    hosts: list[str] = field(default_factory=list)
    #: The first three octets of this LAN's addresses.
    subnet: str = SUBNET
    #: Whether hosts get a route for 224.0.0.0/4 (False: like a host with no default route).
    multicast_route: bool = True

    @property
    def switch(self) -> str:
        """The namespace holding the bridge."""
        return f"{self.prefix}sw"

    def address(self, index: int) -> str:
        """The IPv4 address of host ``index``."""
        return f"{self.subnet}.{index + 10}"

    def port_name(self, index: int) -> str:
        """The switch-side interface of host ``index`` (take it down to cut the host off)."""
        return f"{self.prefix[-8:]}p{index}"

    def create(self) -> None:
        """Make the switch and every host; on failure, remove what was made."""
        try:
            _ip("netns", "add", self.switch)
            # No IGMP snooping: there is no querier here, and a snooping bridge would drop
            # multicast to a port whose membership report it has not seen yet.
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for index in range(self.size):
                self.add_host(index)
        except BaseException:
            self.destroy()
            raise

    def add_host(self, index: int) -> str:
        """Add host ``index``: a namespace with eth0 plugged into the switch."""
        ns = f"{self.prefix}h{index}"
        _ip("netns", "add", ns)
        self.hosts.append(ns)
        port = self.port_name(index)
        _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
            "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")
        if self.multicast_route:
            # The kernel picks a multicast interface by route; this one leads to our bridge.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        return ns

    def attach(self, ns: str, index: int, interface: str = "eth1") -> str:
        """Plug an existing namespace (a host of another LAN) into this switch as host
        ``index``, on ``interface``: a host on two LANs. Returns its address here."""
        port = self.port_name(index)
        _ip("-n", ns, "link", "add", interface, "type", "veth", "peer", "name", port,
            "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", interface)
        _ip("-n", ns, "link", "set", interface, "up")
        return self.address(index)

    def switch_address(self) -> str:
        """Give the bridge an address (for a broker run in the switch namespace)."""
        address = f"{self.subnet}.1"
        _ip("-n", self.switch, "addr", "add", f"{address}/24", "dev", "br0")
        return address

    def switch_command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the switch namespace (where a shared broker can live)."""
        return ["ip", "netns", "exec", self.switch, *argv]

    def set_link(self, index: int, up: bool) -> None:
        """Plug host ``index`` out of (or back into) the switch."""
        _ip("-n", self.switch, "link", "set", self.port_name(index), "up" if up else "down")

    def command(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host ``index``."""
        return ["ip", "netns", "exec", self.hosts[index], *argv]

    def destroy(self) -> None:
        """Delete every namespace (and so every interface) this LAN made."""
        for ns in [*self.hosts, self.switch]:
            _ip("netns", "del", ns, check=False)
        self.hosts.clear()


@contextmanager
def lan(size: int) -> Iterator[Lan]:
    """A :class:`Lan` of ``size`` hosts, always removed afterwards."""
    network = Lan(size)
    network.create()
    try:
        yield network
    finally:
        network.destroy()
