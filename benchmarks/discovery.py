"""Time for N ``p2phost run`` nodes, one per network namespace, to all be connected.

    sudo python benchmarks/discovery.py [--sizes 2,5,10,20] [--plugins static,beacon,...]

Each run builds a private LAN (namespaces on one bridge, see tests/discovery/netns.py),
launches N nodes at once and measures, from the launch, when every node is up (it printed
its peer id) and when every node is connected to every other (``p2phost peers``). The
baseline in the same run is static-discovery with every peer's address configured up
front: the time the nodes need to start, dial and handshake when nothing has to be
discovered. ``redis`` and ``nats`` are broker-discovery with the broker running on the
LAN's switch. Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import build_wheels, write_project  # noqa: E402
from tests.discovery.lan import (  # noqa: E402
    BASE_PLUGINS,
    FAST,
    PORT,
    LanNode,
    full_mesh,
    wait_for,
)
from tests.discovery.netns import Lan, entered, unavailable_reason  # noqa: E402

PLUGINS = {  # benchmark name -> (plugin, broker command or None)
    "static": ("static-discovery", None),
    "beacon": ("beacon-discovery", None),
    "mdns": ("mdns-discovery", None),
    "redis": ("broker-discovery", ["redis-server", "--port", "6379", "--save", "",
                                   "--appendonly", "no", "--protected-mode", "no", "--bind"]),
    "nats": ("broker-discovery", ["nats-server", "-p", "4222", "-a"]),
}


def settings(name: str, lan: Lan, index: int, broker: str) -> dict[str, Any]:
    """The discovery plugin's config for node ``index``."""
    plugin = PLUGINS[name][0]
    if name == "static":
        return {"peers": [f"tcp://{lan.address(j)}:{PORT}" for j in range(lan.size)
                          if j != index]}
    config: dict[str, Any] = {**FAST.get(plugin, {}), "scope": "bench"}
    if name == "redis":
        config["url"] = f"redis://{broker}:6379/0"
    if name == "nats":
        config["url"] = f"nats://{broker}:4222"
    return config


@contextlib.contextmanager
def broker_on(lan: Lan, name: str) -> Iterator[str]:
    """Run the plugin's broker (if any) on the switch; yields its address."""
    command = PLUGINS[name][1]
    if command is None:
        yield ""
        return
    address = lan.switch_address()
    proc = subprocess.Popen(lan.switch_command([*command, address]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = 6379 if name == "redis" else 4222
    try:
        with entered(lan.hosts[0]):
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection((address, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not start on the switch") from None
                    time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


def run_once(name: str, size: int, wheels: Mapping[str, Path], work: Path) -> tuple[float, float]:
    """(seconds from launch until every node is up, seconds from launch to the full mesh)."""
    plugin = PLUGINS[name][0]
    lan = Lan(size)
    lan.create()
    nodes: list[LanNode] = []
    try:
        with broker_on(lan, name) as broker:
            plugins = [*BASE_PLUGINS, plugin]
            roots = [write_project(
                work / f"{name}-{size}-{index}", plugins, name=f"n{index}",
                wheels=[wheels[p] for p in plugins], listen=[f"tcp://0.0.0.0:{PORT}"],
                config={plugin: settings(name, lan, index, broker)}) for index in range(size)]
            launched = time.monotonic()
            nodes.extend(LanNode(lan, index, root) for index, root in enumerate(roots))
            for node in nodes:
                node.wait_started(180)
            up = time.monotonic()
            wait_for(full_mesh(nodes), 180, f"{size} nodes with {name}", nodes)
            return up - launched, time.monotonic() - launched
    finally:
        for node in nodes:
            node.kill()
        lan.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,5,10,20")
    parser.add_argument("--plugins", default=",".join(PLUGINS))
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"error: cannot make network namespaces: {reason}\nfix: run as root with "
                 "iproute2 installed")
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [n.strip() for n in args.plugins.split(",")]
    unknown = set(names) - set(PLUGINS)
    if unknown:
        sys.exit(f"error: unknown plugins {sorted(unknown)} (known: {', '.join(PLUGINS)})")
    with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
        work = Path(tmp)
        projects = [REPO / "official-plugins" / p
                    for p in {*BASE_PLUGINS, *(PLUGINS[n][0] for n in names)}]
        wheels = build_wheels(projects, work / "wheels")
        results: dict[tuple[str, int], tuple[float, float]] = {}
        print(f"{'plugin':8} {'N':>3}  {'all up s':>8}  {'all connected s':>15}  "
              f"{'ratio to static':>15}", flush=True)
        for size in sizes:
            for name in names:
                up, mesh = results[name, size] = run_once(name, size, wheels, work)
                base = results.get(("static", size))
                ratio = f"{mesh / base[1]:.2f}x" if base and name != "static" else "-"
                print(f"{name:8} {size:>3}  {up:>8.2f}  {mesh:>15.2f}  {ratio:>15}", flush=True)


if __name__ == "__main__":
    main()
