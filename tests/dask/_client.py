"""A Dask client as a user runs it, over p2phost: ``python _client.py SCHEDULER_FILE MODE``.

Prints one JSON line. ``compute``: a dask.array reduction and a futures map of 1,000
tasks, on the p2phost cluster and on Dask's own TCP comm (an in-process LocalCluster),
both answers. ``kill`` then also runs 1,000 more tasks and SIGKILLs one worker once a
quarter of them are done: their answers, which worker was killed, which are left.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import _launch  # noqa: F401  (registers the p2phost backend)
import dask.array as da
from distributed import Client, LocalCluster, as_completed

TASKS = 1000


def reduction() -> float:
    x = da.arange(2_000_000, chunks=200_000, dtype="float64")
    return float(((x * 3) % 7).sum().compute())


def square(i: int) -> int:
    return i * i


def slow_square(i: int) -> int:
    time.sleep(0.01)
    return i * i


def compute(client: Client) -> dict[str, object]:
    answers = client.gather(client.map(square, range(TASKS)))
    return {"reduction": reduction(), "map": answers}


def main() -> None:
    scheduler_file, mode = sys.argv[1], sys.argv[2]
    with Client(scheduler_file=scheduler_file, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        workers = client.run(os.getpid)
        out: dict[str, object] = {"p2phost": compute(client), "workers": sorted(workers)}
        if mode == "kill":
            futures = client.map(slow_square, range(TASKS), pure=False)
            victim = sorted(workers)[0]
            done, killed = {}, False
            for future in as_completed(futures):
                done[future.key] = future.result()
                if not killed and len(done) >= TASKS // 4:
                    os.kill(workers[victim], signal.SIGKILL)
                    killed = True
            out["kill"] = {"map": sorted(done.values()), "killed": victim,
                           "left": sorted(client.scheduler_info()["workers"])}
    with LocalCluster(n_workers=2, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster, Client(cluster) as tcp:
        out["tcp"] = compute(tcp)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
