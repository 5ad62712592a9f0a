"""Interop: a DNS-SD tool other than python-zeroconf (BIND's ``dig``) sees a p2phost node.

A node runs the official mdns-discovery plugin inside a private network namespace (see
tests/discovery/netns.py); ``dig`` asks, inside the same namespace, the standard DNS-SD
questions to the mDNS port of the host's own address (RFC 6762 one-shot "legacy unicast"
queries to 10.77.0.10:5353, answered unicast; dig drops answers to a query sent to
224.0.0.251 because they come from another address) and must find the node's PTR, SRV, TXT
and A records, carrying its peer id. No traffic leaves the namespace.
Skipped without namespaces or ``dig``; a failure under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_project

from .lan import BASE_PLUGINS, PORT, LanNode, start_nodes
from .netns import Lan, require_namespaces

SERVICE_TYPE = "_p2phost._tcp.local."
#: Seconds for the node's service to be answered once the node has started (probing ~1 s).
ANSWER_WITHIN = 8.0


def require_dig() -> None:
    """Skip (fail under CI=true) without BIND's dig (Debian: bind9-dnsutils)."""
    if shutil.which("dig") is not None:
        return
    message = ("needs dig (apt-get install -y bind9-dnsutils, "
               "or run scripts/ensure-tools.sh)")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def one_host() -> Iterator[Lan]:
    """A LAN of one host; the namespaces and node are gone after the test."""
    require_namespaces()
    require_dig()
    lan = Lan(1)
    lan.create()
    try:
        yield lan
    finally:
        for node in getattr(lan, "nodes", []):
            node.kill()
        lan.destroy()


def dig(lan: Lan, rtype: str, name: str, source_port: int = 0) -> list[str]:
    """``dig`` run inside host 0: one mDNS query (from ``source_port``, else any), the
    answer section's records."""
    source = ["-b", f"{lan.address(0)}#{source_port}"] if source_port else []
    argv = ["dig", *source, "-p", "5353", f"@{lan.address(0)}", "-t", rtype, name,
            "+time=1", "+tries=1", "+noall", "+answer"]
    result = subprocess.run(lan.command(0, argv), capture_output=True, text=True, timeout=10)
    return [line for line in result.stdout.splitlines()
            if line.strip() and not line.startswith(";")]


def poll(ask: Callable[[], list[str]], wanted: Callable[[list[str]], bool],
         timeout: float, what: str, node: LanNode) -> list[str]:
    """Ask until the answer is ``wanted``; AssertionError with the last answer and log."""
    deadline = time.monotonic() + timeout
    while True:
        answer = ask()
        if wanted(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last answer "
                                 f"{answer!r}\n--- node log:\n{node.log[-3000:]}")
        time.sleep(0.2)


def test_dig_sees_the_nodes_dns_sd_service_and_its_peer_id(
    one_host: Lan, tmp_path: Path, official_wheels: dict[str, Path],
) -> None:
    lan = one_host

    def make_root(index: int, plugin: str, settings: Mapping[str, Any]) -> Path:
        plugins = [*BASE_PLUGINS, plugin]
        return write_project(tmp_path / f"n{index}", plugins, name=f"n{index}",
                             wheels=[official_wheels[p] for p in plugins],
                             listen=[f"tcp://0.0.0.0:{PORT}"], config={plugin: settings})

    nodes = start_nodes(lan, make_root, "mdns-discovery")
    lan.nodes = nodes  # type: ignore[attr-defined]  # for the fixture's clean-up
    node = nodes[0]
    instance = f"{node.peer_id}.{SERVICE_TYPE}"

    # Browse: PTR _p2phost._tcp.local. -> PEERID._p2phost._tcp.local.
    ptr = poll(lambda: dig(lan, "PTR", SERVICE_TYPE),
               lambda lines: any(instance.lower() in line.lower() for line in lines),
               ANSWER_WITHIN, "dig browsing _p2phost._tcp", node)
    print("PTR:", *ptr, sep="\n  ")
    assert any(line.split()[3] == "PTR" and line.split()[-1].lower() == instance.lower()
               for line in ptr)

    # Resolve: SRV names the node's host and port, TXT carries its peer id and scope.
    srv = poll(lambda: dig(lan, "SRV", instance),
               lambda lines: any(line.split()[3] == "SRV" for line in lines),
               ANSWER_WITHIN, "dig resolving the service's SRV", node)
    print("SRV:", *srv, sep="\n  ")
    fields = next(line.split() for line in srv if line.split()[3] == "SRV")
    assert fields[0].lower() == instance.lower()
    assert int(fields[6]) == PORT
    assert fields[7].lower() == f"{node.peer_id}.local.".lower()

    txt = poll(lambda: dig(lan, "TXT", instance),
               lambda lines: any(line.split()[3] == "TXT" for line in lines),
               ANSWER_WITHIN, "dig resolving the service's TXT", node)
    print("TXT:", *txt, sep="\n  ")
    record = next(line for line in txt if line.split()[3] == "TXT")
    assert f'"id={node.peer_id}"' in record
    assert '"scope=lan"' in record
    assert '"addr0=tcp://' in record

    # The SRV target's A record: the address the test gave the host.
    a = poll(lambda: dig(lan, "A", f"{node.peer_id}.local."),
             lambda lines: any(line.split()[3] == "A" for line in lines),
             ANSWER_WITHIN, "dig resolving the SRV target's address", node)
    assert lan.address(0) in {line.split()[-1] for line in a if line.split()[3] == "A"}

    # Every query is answered, whatever port it comes from: the kernel hands a unicast
    # query to one socket bound to the address by its source port, and a second zeroconf
    # instance there (a browser without the service) once left about half unanswered.
    # Three tries per port (one slow answer on a loaded machine is no bug): a port whose
    # queries land on a socket that never answers fails all three.
    def answered(port: int) -> bool:
        return any(line.split()[3] == "TXT" for line in dig(lan, "TXT", instance, port))

    unanswered = [port for port in range(40100, 40120)
                  if not any(answered(port) for _ in range(3))]
    assert not unanswered, f"no answer to the queries from ports {unanswered}"
