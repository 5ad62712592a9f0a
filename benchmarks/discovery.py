"""Time for N ``p2phost run`` nodes, one per network namespace, to all be connected.

    sudo python benchmarks/discovery.py [--sizes 2,5,10,20] [--plugins static,beacon,...]
    sudo python benchmarks/discovery.py --sizes 20 \
        --plugins beacon,beacon-unsigned,mdns,mdns-unsigned
    python benchmarks/discovery.py --verify-only

``beacon-unsigned`` and ``mdns-unsigned`` are the plugins as they were before presence
records were signed (built from the parent of the commit that added
``sdk/p2phost_sdk/_signed.py``), so signed and unsigned discovery are timed in one run;
their rows show signed / unsigned. Every run also measures the CPU time to verify 1,000
signed presence records beside parsing 1,000 unsigned announcements (today's checks).

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
import io
import socket
import subprocess
import sys
import tarfile
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
    "beacon-unsigned": ("beacon-discovery", None),
    "mdns-unsigned": ("mdns-discovery", None),
}
#: The unsigned plugins' rows are compared with these signed ones.
SIGNED_OF = {"beacon-unsigned": "beacon", "mdns-unsigned": "mdns"}


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


def unsigned_sources(work: Path) -> dict[str, Path]:
    """The beacon and mDNS plugin sources from before signed presence (git history)."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "sdk/p2phost_sdk/_signed.py"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    if not added:
        raise RuntimeError("no commit adds sdk/p2phost_sdk/_signed.py: no unsigned baseline")
    out: dict[str, Path] = {}
    for plugin in ("beacon-discovery", "mdns-discovery"):
        archive = subprocess.run(["git", "archive", f"{added[-1]}^", f"official-plugins/{plugin}"],
                                 cwd=REPO, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(work / "unsigned", filter="data")
        out[plugin] = work / "unsigned" / "official-plugins" / plugin
    return out


def verify_cpu(count: int = 1000) -> tuple[float, float]:
    """CPU seconds to verify ``count`` signed beacons, and to parse ``count`` unsigned ones
    the way the plugins checked them before signatures (decode + check_announcement)."""
    from p2phost_sdk import Identity, PresenceBook, PresenceSigner, check_announcement

    signers = [PresenceSigner(Identity.generate()) for _ in range(20)]
    records = [signers[i % 20].sign("bench", [f"tcp://10.77.0.{i % 200}:7400"], lifetime=60)
               for i in range(count)]
    book = PresenceBook()
    start = time.process_time()
    for record in records:
        book.accept(record)
        check_announcement(record.peer_id, list(record.addresses), source="bench")
    signed = time.process_time() - start
    start = time.process_time()
    for record in records:
        check_announcement(record.peer_id, list(record.addresses), source="bench")
    unsigned = time.process_time() - start
    assert book.accepted == count
    return signed, unsigned


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
                wheels=[wheels[f"{p}@unsigned" if name in SIGNED_OF and p == plugin else p]
                        for p in plugins], listen=[f"tcp://0.0.0.0:{PORT}"],
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
    parser.add_argument("--verify-only", action="store_true",
                        help="only the CPU cost of verifying signed records")
    args = parser.parse_args()
    signed, unsigned = verify_cpu()
    print(f"CPU per 1,000 presence records: verified {signed * 1000:.1f} ms, unsigned checks "
          f"only {unsigned * 1000:.1f} ms ({signed / unsigned:.1f}x; "
          f"{signed * 1000:.1f} us per record)", flush=True)
    if args.verify_only:
        return
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
        if any(n in SIGNED_OF for n in names):
            for plugin, source in unsigned_sources(work).items():
                built = build_wheels([source], work / f"wheels-unsigned-{plugin}")
                wheels[f"{plugin}@unsigned"] = next(iter(built.values()))
        results: dict[tuple[str, int], tuple[float, float]] = {}
        print(f"{'plugin':8} {'N':>3}  {'all up s':>8}  {'all connected s':>15}  "
              f"{'ratio to static':>15}", flush=True)
        for size in sizes:
            for name in names:
                up, mesh = results[name, size] = run_once(name, size, wheels, work)
                base = results.get(("static", size))
                ratio = f"{mesh / base[1]:.2f}x" if base and name != "static" else "-"
                if name in SIGNED_OF and (SIGNED_OF[name], size) in results:
                    signed_mesh = results[SIGNED_OF[name], size][1]
                    ratio += f"  signed/unsigned {signed_mesh / mesh:.2f}x"
                print(f"{name:8} {size:>3}  {up:>8.2f}  {mesh:>15.2f}  {ratio:>15}", flush=True)


if __name__ == "__main__":
    main()
