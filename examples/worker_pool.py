"""A worker pool that takes jobs at least once: no job is lost when a worker fails.

    python examples/worker_pool.py STATE_BASE [JOBS]

One coordinator and three workers, each a node of its own, in one process on the memory
transport (put them in separate processes or machines by changing ``listen`` to tcp:// or
redis://). Jobs go out on an at-least-once topic: the coordinator keeps each job in its
durable outbox until a worker's handler returned, and a worker whose handler raises gets
it again (docs/delivery.md). The workers here fail every job's first try on purpose.

The plugins (memory-transport, json-codec) come from the program's environment
(``pip install p2phost-memory-transport p2phost-json-codec``) or each STATE_BASE/NAME/.p2phost.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

import p2phost
from p2phost import Message

WORKERS = 3


def manifest(name: str, listen: list[str]) -> dict[str, object]:
    return {"node": {"name": name, "listen": listen},
            "plugins": {"memory-transport": "*", "json-codec": "*"}}


async def main(base: Path, jobs: int) -> None:
    results: dict[int, int] = {}
    all_done = asyncio.Event()
    coordinator = p2phost.open_node(manifest=manifest("coordinator", []),
                                    state_dir=base / "coordinator")

    @coordinator.handler("results", delivery="at-least-once")
    async def result(message: Message) -> None:
        results[message.body["job"]] = message.body["square"]
        if len(results) == jobs:
            all_done.set()

    workers = []
    for i in range(WORKERS):
        worker = p2phost.open_node(
            manifest=manifest(f"worker-{i}", [f"mem://worker-{i}-{uuid.uuid4().hex[:8]}"]),
            state_dir=base / f"worker-{i}")
        tried: set[int] = set()

        @worker.handler("jobs", delivery=p2phost.Delivery(
            "at-least-once", immediate_retries=1, retry_delay=0.1))
        async def work(message: Message, worker: p2phost.AsyncNode = worker,
                       tried: set[int] = tried) -> None:
            job = message.body["job"]
            if job not in tried:  # the first try fails: the job comes again
                tried.add(job)
                raise RuntimeError(f"worker hiccup on job {job}")
            await worker.send(message.sender, "results",
                              {"job": job, "square": job * job}, key=f"result-{job}")

        workers.append(worker)

    async with contextlib.AsyncExitStack() as stack:
        for node in (coordinator, *workers):
            await stack.enter_async_context(node)
        peers = [await coordinator.connect(w.addresses[0]) for w in workers]
        for job in range(jobs):
            # Returns once the job is in the coordinator's durable outbox.
            await coordinator.send(peers[job % WORKERS], "jobs", {"job": job},
                                   key=f"job-{job}")
        await asyncio.wait_for(all_done.wait(), 60)
    assert results == {job: job * job for job in range(jobs)}
    print(f"{jobs} jobs done by {WORKERS} workers, each after one failed try")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 30))
