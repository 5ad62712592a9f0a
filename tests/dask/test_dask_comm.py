"""Dask over p2phost (issue 22): a scheduler and two workers as separate processes,
their comms carried by p2phost nodes (tcp+noise, and the redis transport), a client
whose answers equal Dask's own TCP comm, and a worker SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL, build_wheels, service_or_skip, write_project

pytest.importorskip("distributed")

HERE = Path(__file__).resolve().parent
LAUNCH, CLIENT = HERE / "_launch.py", HERE / "_client.py"
PLUGINS = ["noise-security", "msgpack-codec", "broker-discovery", "dask-comm"]
TRANSPORTS = ["tcp-transport", "redis-transport"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The plugins these tests use, built once (not every official plugin)."""
    return build_wheels([OFFICIAL / name for name in [*TRANSPORTS, *PLUGINS]],
                        tmp_path_factory.mktemp("dask-wheels"))


class Cluster:
    """A scheduler and two workers (no nanny), each a p2phost node of its own."""

    def __init__(self, project: Path, logs: Path) -> None:
        self.env = {**os.environ, "P2PHOST_PROJECT": str(project)}
        self.logs, self.file = logs, logs / "scheduler.json"
        self.processes: list[subprocess.Popen[bytes]] = []
        self._start("scheduler", "--protocol", "p2phost", "--scheduler-file", str(self.file),
                    "--no-dashboard")
        for n in (1, 2):
            self._start(f"worker{n}", "--scheduler-file", str(self.file), "--no-nanny",
                        "--no-dashboard", "--nthreads", "2")

    def _start(self, name: str, *args: str) -> None:
        command = "scheduler" if name == "scheduler" else "worker"
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes.append(subprocess.Popen(
                [sys.executable, str(LAUNCH), command, *args], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.logs))

    def client(self, mode: str, timeout: float) -> dict[str, object]:
        """Run the client script; its JSON answer."""
        try:
            done = subprocess.run([sys.executable, str(CLIENT), str(self.file), mode],
                                  env=self.env, capture_output=True, text=True,
                                  timeout=timeout, cwd=self.logs)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the Dask client did not finish in {timeout}s\n"
                                 f"{self.tails()}") from exc
        assert done.returncode == 0, f"{done.stderr[-3000:]}\n{self.tails()}"
        # Its answer alone: p2phost's lines (a killed worker's "cannot connect to ... (will
        # retry)") are log records, which go to stderr, never into a program's output.
        (answer,) = done.stdout.strip().splitlines()
        return json.loads(answer)  # type: ignore[no-any-return]

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        deadline = time.monotonic() + 3  # the scheduler's graceful close is not under test
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _cluster(tmp_path: Path, wheels: dict[str, Path], transport: str,
             listen: str) -> Iterator[Cluster]:
    service_or_skip("Redis", 6379)  # broker-discovery finds the peers through it
    plugins = [transport, *PLUGINS]
    project = write_project(
        tmp_path / "project", plugins, wheels=[wheels[p] for p in plugins],
        listen=[listen],
        config={"broker-discovery": {"scope": "dask-" + uuid.uuid4().hex[:12],
                                     "interval": 0.25}})
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(project, logs)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def tcp_noise(tmp_path: Path, wheels: dict[str, Path]) -> Iterator[Cluster]:
    yield from _cluster(tmp_path, wheels, "tcp-transport", "tcp://127.0.0.1:0")


@pytest.fixture
def over_redis(tmp_path: Path, wheels: dict[str, Path]) -> Iterator[Cluster]:
    yield from _cluster(tmp_path, wheels, "redis-transport", "redis://127.0.0.1:6379/0")


def _same_as_tcp(answer: dict[str, object]) -> None:
    assert answer["p2phost"] == answer["tcp"]
    p2p = answer["p2phost"]
    assert isinstance(p2p, dict) and p2p["map"] == [i * i for i in range(1000)]
    workers = answer["workers"]
    assert isinstance(workers, list) and len(workers) == 2
    assert all(str(w).startswith("p2phost://") for w in workers)


@pytest.mark.slow
@pytest.mark.services
def test_dask_over_tcp_noise_answers_as_on_tcp_and_recovers_from_a_killed_worker(
        tcp_noise: Cluster) -> None:
    answer = tcp_noise.client("kill", timeout=150)
    _same_as_tcp(answer)
    killed = answer["kill"]
    assert isinstance(killed, dict)
    assert killed["map"] == sorted(i * i for i in range(1000))
    assert killed["killed"] not in killed["left"] and len(killed["left"]) == 1


@pytest.mark.slow
@pytest.mark.services
def test_dask_over_redis_answers_as_on_tcp(over_redis: Cluster) -> None:
    _same_as_tcp(over_redis.client("compute", timeout=150))


LOCAL_CLUSTER = """
import json, _launch
import dask.array as da
from distributed import Client, LocalCluster
with LocalCluster(n_workers=2, processes=False, protocol="p2phost://",
                  dashboard_address=None) as cluster, Client(cluster) as client:
    print(json.dumps({"scheduler": cluster.scheduler_address,
                      "workers": sorted(client.scheduler_info()["workers"]),
                      "sum": float(da.arange(100_000, chunks=10_000).sum().compute()),
                      "map": client.gather(client.map(abs, range(-50, 0)))}))
"""


def test_a_local_cluster_in_one_process_shares_one_node(
        tmp_path: Path, wheels: dict[str, Path]) -> None:
    plugins = ["tcp-transport", "msgpack-codec"]
    project = write_project(tmp_path / "project", plugins,
                            wheels=[wheels[p] for p in plugins])
    done = subprocess.run([sys.executable, "-c", LOCAL_CLUSTER], cwd=HERE, timeout=90,
                          capture_output=True, text=True,
                          env={**os.environ, "P2PHOST_PROJECT": str(project)})
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    scheduler = answer["scheduler"]
    assert answer["workers"] == [f"{scheduler}/1", f"{scheduler}/2"]
    assert answer["sum"] == sum(range(100_000))
    assert answer["map"] == list(range(50, 0, -1))


OPEN_NODE = """
import asyncio, _launch
from p2phost_dask_comm import NoProject
from p2phost_dask_comm._node import open_dask_node
try:
    asyncio.run(open_dask_node())
except NoProject as exc:
    print(exc)
"""


def test_a_project_without_messagepack_is_told_to_install_it(
        tmp_path: Path, wheels: dict[str, Path]) -> None:
    project = write_project(tmp_path / "project", ["tcp-transport"],
                            wheels=[wheels["tcp-transport"]])
    done = subprocess.run([sys.executable, "-c", OPEN_NODE], cwd=HERE, timeout=60,
                          capture_output=True, text=True,
                          env={**os.environ, "P2PHOST_PROJECT": str(project)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "has no codec for application/msgpack, which carries Dask's frames " \
        "(fix: p2phost plugin install msgpack-codec)" in done.stdout


def test_the_wheel_registers_the_backend_with_dask(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["dask-comm"]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = wheel.read(name).decode()
    assert "[distributed.comm.backends]\np2phost = p2phost_dask_comm:P2PHostBackend" in text
    assert "[p2phost.plugins]\ndask-comm = p2phost_dask_comm" in text
