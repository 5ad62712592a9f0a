"""Dask over p2phost beside Dask's own TCP comm, in one run (issue 22, part 1).

For each comm, a Dask scheduler and two workers (no nanny) run as separate processes,
and a client in this process measures:

* task throughput: 1,000 small tasks (``client.map`` of an increment, then ``gather``),
  in tasks per second;
* a 100 MB array transfer: a NumPy array made on one worker is needed by a task on the
  other (worker to worker, as Dask moves dependencies), and then gathered by the client;
  in MB per second.

The comms: Dask's ``tcp://`` (the baseline), and ``p2phost://`` over tcp-transport
without a security plugin (the same plaintext as the baseline) and with noise-security
(every frame encrypted). Peers find each other with broker-discovery (Redis). Ratios are
p2phost / TCP (higher is better; the issue's aim is 0.7). The load average is printed
with the figures: the machine is shared.

Beside each rate it prints the CPU time the phase cost in all (the scheduler's and both
workers' threads, from ``/proc/PID/task/*/schedstat``, plus this process), as the ratio
TCP's CPU ÷ p2phost's (higher is better, as for the rates): on a busy machine, where
wall-clock rates swing with the other load, the CPU a transfer costs holds.

Run ``python benchmarks/bridges_dask.py`` (``--quick`` for one round, ``--json FILE`` to
keep the figures); ``benchmarks/bridges.py`` runs it after the broker bridges
(``--only dask`` for this part alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "official-plugins" / "dask-comm" / "src"))
sys.path.insert(0, str(REPO))

TASKS = 1000
ARRAY_BYTES = 100 * 1000 * 1000
COMMS = {"p2phost tcp": ["tcp-transport"],
         "p2phost tcp+noise": ["tcp-transport", "noise-security"]}
PLUGINS = ["msgpack-codec", "broker-discovery", "dask-comm"]


def _register() -> None:
    # The dev venv does not install official plugins: register what the entry point names.
    from distributed.comm.registry import backends
    from p2phost_dask_comm import P2PHostBackend

    backends["p2phost"] = P2PHostBackend()


def _inc(i: int) -> int:
    return i + 1


def _make(nbytes: int) -> Any:
    import numpy

    return numpy.ones(nbytes // 8)


def _size(array: Any) -> int:
    return int(array.nbytes)


class Cluster:
    """A scheduler and two workers as processes, for one comm."""

    def __init__(self, protocol: str, home: Path, project: Path | None) -> None:
        self.file = home / f"scheduler-{uuid.uuid4().hex[:8]}.json"
        env = dict(os.environ)
        if project is not None:
            env["P2PHOST_PROJECT"] = str(project)
        me = [sys.executable, str(Path(__file__).resolve()), "--role"]
        where = ["--host", "127.0.0.1"] if protocol == "tcp" else []
        self.processes = [subprocess.Popen(
            [*me, "scheduler", "--protocol", protocol, *where, "--port", "0",
             "--scheduler-file", str(self.file), "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        for _ in range(2):
            self.processes.append(subprocess.Popen(
                [*me, "worker", "--scheduler-file", str(self.file), "--no-nanny",
                 "--no-dashboard", "--nthreads", "2", *where],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait_started(self, timeout: float) -> None:
        """Wait until the scheduler wrote its file."""
        deadline = time.monotonic() + timeout
        while not self.file.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"no scheduler wrote {self.file} within {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by every thread of ``pids`` and of this process."""
    total = time.process_time()
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended meanwhile
    return total


async def measure(scheduler_file: Path, pids: list[int]) -> dict[str, float]:
    """One round over one cluster: tasks/s, MB/s worker to worker and to the client,
    and the CPU seconds each phase cost (see :func:`cpu_seconds`)."""
    from distributed import Client
    from p2phost_dask_comm import NodeHolder

    async with Client(scheduler_file=str(scheduler_file), asynchronous=True,
                      timeout=60) as client:
        await client.wait_for_workers(2, timeout=60)
        first, second = sorted(client.scheduler_info()["workers"])
        await client.gather(client.map(_inc, range(100), pure=False))  # warm the comms
        start, cpu = time.perf_counter(), cpu_seconds(pids)
        await client.gather(client.map(_inc, range(TASKS), pure=False))
        tasks = TASKS / (time.perf_counter() - start)
        tasks_cpu = cpu_seconds(pids) - cpu

        array = client.submit(_make, ARRAY_BYTES, workers=[first], pure=False)
        await array
        start, cpu = time.perf_counter(), cpu_seconds(pids)
        assert await client.submit(_size, array, workers=[second]) == ARRAY_BYTES // 8 * 8
        between = ARRAY_BYTES / 1e6 / (time.perf_counter() - start)
        between_cpu = cpu_seconds(pids) - cpu
        start, cpu = time.perf_counter(), cpu_seconds(pids)
        got = await array
        to_client = ARRAY_BYTES / 1e6 / (time.perf_counter() - start)
        to_client_cpu = cpu_seconds(pids) - cpu
        assert got.nbytes == ARRAY_BYTES // 8 * 8
    await NodeHolder.current().aclose()
    return {"tasks_per_s": tasks, "worker_to_worker_mb_s": between,
            "to_client_mb_s": to_client, "tasks_cpu_s": tasks_cpu,
            "worker_to_worker_cpu_s": between_cpu, "to_client_cpu_s": to_client_cpu}


def _projects(home: Path) -> dict[str, Path]:
    from tests.conftest import OFFICIAL, build_wheels, write_project

    names = sorted({p for plugins in COMMS.values() for p in plugins} | set(PLUGINS))
    wheels = build_wheels([OFFICIAL / n for n in names], home / "wheels")
    scope = "bench-" + uuid.uuid4().hex[:10]
    projects = {}
    for comm, transport in COMMS.items():
        plugins = [*transport, *PLUGINS]
        projects[comm] = write_project(
            home / comm.replace(" ", "-").replace("+", "-"), plugins,
            wheels=[wheels[p] for p in plugins], listen=["tcp://127.0.0.1:0"],
            config={"broker-discovery": {"scope": f"{scope}-{len(projects)}",
                                         "interval": 0.25}})
    return projects


def run_dask(rounds: int = 5) -> dict[str, dict[str, float]]:
    """Every comm's figures (medians of ``rounds``), Dask's TCP first (the baseline),
    with ratios to it. The clusters run side by side and the rounds take turns, so a
    change in the machine's load falls on every comm alike."""
    _register()
    rows: dict[str, list[dict[str, float]]] = {comm: [] for comm in ["tcp", *COMMS]}
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        home = Path(tmp)
        projects = _projects(home)
        clusters = {comm: Cluster("tcp" if comm == "tcp" else "p2phost", home,
                                  projects.get(comm)) for comm in rows}
        try:
            for cluster in clusters.values():
                cluster.wait_started(90)
            for _ in range(rounds):
                for comm, cluster in clusters.items():
                    if comm in projects:  # the client's own node opens from it too
                        os.environ["P2PHOST_PROJECT"] = str(projects[comm])
                    rows[comm].append(asyncio.run(measure(
                        cluster.file, [p.pid for p in cluster.processes])))
        finally:
            for cluster in clusters.values():
                cluster.stop()
    results = {comm: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for comm, runs in rows.items()}
    base = results["tcp"]
    for comm in COMMS:
        for key in list(base):
            mine = results[comm][key]
            # Rates: p2phost ÷ TCP; CPU seconds: TCP ÷ p2phost (both: higher is better).
            results[comm][f"{key}_ratio"] = (base[key] / mine if key.endswith("_cpu_s")
                                             else mine / base[key]) if mine and base[key] \
                else float("nan")
    return results


def _table(results: dict[str, dict[str, float]], heads: list[str], keys: list[str],
           form: str) -> None:
    print(f"{'comm':<20}{heads[0]:>10}{'ratio':>7}{heads[1]:>11}{'ratio':>7}"
          f"{heads[2]:>15}{'ratio':>7}")
    for comm, r in results.items():
        cells = [(format(r[k], form), f"{r[k + '_ratio']:.2f}" if k + "_ratio" in r
                  else "1.00") for k in keys]
        print(f"{comm:<20}{cells[0][0]:>10}{cells[0][1]:>7}{cells[1][0]:>11}"
              f"{cells[1][1]:>7}{cells[2][0]:>15}{cells[2][1]:>7}")


def report(results: dict[str, dict[str, float]]) -> None:
    """The figures as tables, with the load average before and after."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Dask over p2phost vs Dask's TCP comm (load average {load})")
    _table(results, ["tasks/s", "w->w MB/s", "->client MB/s"],
           ["tasks_per_s", "worker_to_worker_mb_s", "to_client_mb_s"], ".0f")
    print("CPU seconds per phase, all processes (ratio: TCP's CPU ÷ p2phost's)")
    _table(results, ["tasks s", "w->w s", "->client s"],
           ["tasks_cpu_s", "worker_to_worker_cpu_s", "to_client_cpu_s"], ".3f")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"(load average after: {load})")


def _role(role: str, args: list[str]) -> None:
    _register()
    sys.argv = [role, *args]
    if role == "scheduler":
        from distributed.cli.dask_scheduler import main
    else:
        from distributed.cli.dask_worker import main
    main()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        _role(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of five")
    parser.add_argument("--rounds", type=int, help="rounds to run (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = run_dask(args.rounds or (1 if args.quick else 5))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
