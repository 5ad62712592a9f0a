"""The overlay across subnets, in network namespaces this test makes and deletes.

Three subnets joined only through the bootstrap node's namespace (it routes between
them); twelve ``p2phost run`` processes (tcp, noise, dht-discovery, relay) that know only
the bootstrap address and each other's peer ids find each other through the DHT; one of
them sits behind NAT (iptables MASQUERADE in its gateway's namespace), listens only on
the relay (the bootstrap node) and is reached through it by every other node. A capture
on the relay's namespace (tcpdump) holds no plaintext of what crossed it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from p2phost._project import Project
from p2phost._runtime.node._control import query_control
from tests.conftest import write_project
from tests.discovery.netns import Lan, _ip, require_namespaces, unique_name
from tests.runtime.processes import RunningNode

pytestmark = pytest.mark.slow

PLUGINS = ["tcp-transport", "noise-security", "json-codec", "echo", "dht-discovery", "relay"]
SUBNETS = ("10.81.0", "10.82.0", "10.83.0")
PRIVATE = "192.168.77"
SECRET = "the eagle lands at midnight"
PORT = 7400


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def topology() -> Iterator[dict[str, object]]:
    """Subnets A, B, C (hosts 1-4, 1-3, 1-3), the router-bootstrap namespace on all three,
    and a NAT gateway in C with one host behind it. Everything is deleted afterwards."""
    lans = [Lan(0, subnet=subnet) for subnet in SUBNETS]
    extra: list[str] = []
    try:
        for lan in lans:
            _ip("netns", "add", lan.switch)
            _ip("-n", lan.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", lan.switch, "link", "set", "br0", "up")
        boot = lans[0].add_host(0)
        for number, lan in enumerate(lans[1:], 1):
            lan.attach(boot, 0, f"eth{number}")
        _sh("ip", "netns", "exec", boot, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        hosts: list[tuple[str, str, int]] = []  # (namespace, address, subnet)
        for index, (lan, count) in enumerate(zip(lans, (4, 3, 3), strict=True)):
            for number in range(1, count + 1):
                ns = lan.add_host(number)
                _ip("-n", ns, "route", "add", "default", "via", lan.address(0))
                hosts.append((ns, lan.address(number), index))
        # The gateway: a host of C that masquerades a private network behind it.
        gateway = lans[2].add_host(5)
        _ip("-n", gateway, "route", "add", "default", "via", lans[2].address(0))
        natted = unique_name("nat")
        _ip("netns", "add", natted)
        extra.append(natted)
        _ip("-n", gateway, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
            "netns", natted)
        _ip("-n", gateway, "addr", "add", f"{PRIVATE}.1/24", "dev", "lan0")
        _ip("-n", gateway, "link", "set", "lan0", "up")
        _ip("-n", natted, "addr", "add", f"{PRIVATE}.2/24", "dev", "eth0")
        _ip("-n", natted, "link", "set", "lo", "up")
        _ip("-n", natted, "link", "set", "eth0", "up")
        _ip("-n", natted, "route", "add", "default", "via", f"{PRIVATE}.1")
        _sh("ip", "netns", "exec", gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _sh("ip", "netns", "exec", gateway, "iptables", "-t", "nat", "-A", "POSTROUTING",
            "-s", f"{PRIVATE}.0/24", "-o", "eth0", "-j", "MASQUERADE")
        yield {"boot": boot, "boot_addresses": [lan.address(0) for lan in lans],
               "hosts": hosts, "natted": natted}
    finally:
        for lan in lans:
            lan.destroy()
        for ns in extra:
            _ip("netns", "del", ns, check=False)


def peers_of(node: RunningNode) -> dict[str, dict[str, str]]:
    answer = query_control(Project(node.root).control_socket, "peers", timeout=10)
    return {p["peer_id"]: p for p in answer.get("peers", [])}


def send(namespace: str, root: Path, address: str, text: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "p2phost", "send", address,
         "echo", f'{{"text": "{text}"}}', "--request"],
        cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_twelve_nodes_in_three_subnets_and_one_behind_nat(
        tmp_path: Path, official_wheels: dict[str, Path]) -> None:
    require_namespaces()
    if shutil.which("iptables") is None or shutil.which("tcpdump") is None:
        reason = "needs iptables and tcpdump (apt-get install -y iptables tcpdump)"
        if __import__("os").environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    wheels = [official_wheels[p] for p in PLUGINS]
    with topology() as net, ExitStack() as stack:
        boot_ns, hosts, natted = net["boot"], net["hosts"], net["natted"]
        boot_at: list[str] = net["boot_addresses"]  # type: ignore[assignment]
        assert isinstance(boot_ns, str) and isinstance(natted, str)
        roots = {name: tmp_path / name for name in
                 ["boot", "nat", *(f"n{i}" for i in range(len(hosts)))]}  # type: ignore[arg-type]
        ids = {name: Project(root).identity().peer_id for name, root in roots.items()}
        fast = {"lookup-interval": 1.0, "request-timeout": 3.0, "refresh-interval": 30.0}
        write_project(roots["boot"], PLUGINS, wheels=wheels, name="boot",
                      listen=[f"tcp://0.0.0.0:{PORT}"],
                      config={"dht-discovery": {**fast, "advertise": [
                          f"tcp://{boot_at[0]}:{PORT}"]}, "relay": {"serve": True}})
        relay_at = f"relay+tcp://{boot_at[2]}:{PORT}"
        # upgrade = false: the others stay on the relay (else the natted node dials each
        # of them directly, out through its NAT, and the circuits close: tests/relay).
        write_project(roots["nat"], PLUGINS, wheels=wheels, name="nat", listen=[relay_at],
                      config={"dht-discovery": {**fast,
                                                "bootstrap": [f"tcp://{boot_at[2]}:{PORT}"]},
                              "relay": {"upgrade": False}})
        everyone = [ids[n] for n in roots if n != "boot"]
        for i, (_ns, address, subnet) in enumerate(hosts):  # type: ignore[misc]
            write_project(roots[f"n{i}"], PLUGINS, wheels=wheels, name=f"n{i}",
                          listen=[f"tcp://{address}:{PORT}"],
                          config={"dht-discovery": {
                              **fast, "bootstrap": [f"tcp://{boot_at[subnet]}:{PORT}"],
                              "find": [p for p in everyone if p != ids[f"n{i}"]]}})

        capture = tmp_path / "relay.pcap"
        tcpdump = subprocess.Popen(
            ["ip", "netns", "exec", boot_ns, "tcpdump", "-i", "any", "-U", "-s", "0", "-w",
             str(capture)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stack.callback(lambda: (tcpdump.terminate(), tcpdump.wait(10)))
        time.sleep(1.0)  # tcpdump opens its sockets

        nodes: dict[str, RunningNode] = {}
        for name, ns in [("boot", boot_ns), ("nat", natted),
                         *((f"n{i}", h[0]) for i, h in enumerate(hosts))]:  # type: ignore[misc]
            node = RunningNode(roots[name], timeout=60, prefix=["ip", "netns", "exec", ns])
            stack.callback(node.stop)
            nodes[name] = node
        assert nodes["nat"].address == f"{relay_at}/p2p-circuit/{ids['nat']}"

        # Every node finds every other through the DHT; the natted one through the relay.
        deadline, missing = time.monotonic() + 150, {}
        while time.monotonic() < deadline:
            missing = {name: set(everyone) - {ids[name]} - set(peers_of(node))
                       for name, node in nodes.items() if name != "boot"}
            if not any(missing.values()):
                break
            time.sleep(1.0)
        assert not any(missing.values()), f"not connected: {missing}"
        for name, node in nodes.items():
            if name in ("boot", "nat"):
                continue
            natted_peer = peers_of(node)[ids["nat"]]
            assert natted_peer["address"].startswith(relay_at), natted_peer
            assert natted_peer["security"] == "noise"

        # Messages between subnets (routed by the bootstrap namespace), and out from
        # behind the NAT.
        far = f"tcp://{hosts[9][1]}:{PORT}"  # type: ignore[index]
        assert SECRET in send(hosts[0][0], roots["n0"], far, SECRET)  # type: ignore[index]
        assert SECRET in send(natted, roots["nat"], f"tcp://{hosts[0][1]}:{PORT}", SECRET)  # type: ignore[index]

        tcpdump.terminate()
        tcpdump.wait(10)
        captured = capture.read_bytes()
        assert len(captured) > 100_000, "the capture saw too little traffic"
        # DHT requests to the natted node crossed the relay in circuits; nothing of them,
        # of the echo messages routed through this namespace, nor any peer id is in clear.
        for needle in (SECRET, "find_node", '"op"', ids["nat"], ids["n0"], ids["boot"]):
            assert needle.encode() not in captured, f"{needle!r} in clear on the relay"
