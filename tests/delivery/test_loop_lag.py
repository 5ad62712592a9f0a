"""Nothing about the delivery database blocks the event loop: ``dead purge`` of 10,000
letters in another process, beside a node handling effectively-once messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from p2phost._runtime.delivery._deadletter import DeadLetter, DeadLetters
from p2phost._runtime.delivery._store import DATABASE_NAME, open_database, transaction
from tests.delivery.test_node import Keeper, Make, Sender, kind, make, until

__all__ = ["kind", "make"]  # the fixtures, shared with test_node

# The CLI's purge (host/p2phost/_cli/dead.py), with its transaction held open a second
# longer, as on a slow disk: a loop that waited for the lock would stall for all of it.
PURGE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from p2phost._runtime.delivery._deadletter import DeadLetters
    from p2phost._runtime.delivery._store import open_database, transaction
    db = open_database(Path(sys.argv[1]))
    store = DeadLetters(db, limit=100_000, keep="newest")
    letters = store.select([], None)
    print("purging", len(letters), flush=True)
    with transaction(db):
        DeadLetters.remove(db, letters)
        time.sleep(1.0)
    print("purged", flush=True)
""")


class CpuWait:
    """Seconds this process's threads spent runnable but waiting for a CPU (Linux
    schedstat), summed over its threads.

    On a loaded machine most of a loop's lag is that wait: the OS running other
    processes, either the loop's own thread or a thread holding the GIL the loop needs.
    That says nothing about what the loop itself does. Lag minus this wait is the loop's
    own stall: its callbacks' CPU time and any wait it blocked in (a lock, a file).
    Without /proc (not Linux) it reads 0, and lag is taken raw.
    """

    def __call__(self) -> float:
        total = 0
        with contextlib.suppress(OSError):
            for thread in os.listdir("/proc/self/task"):
                with contextlib.suppress(OSError, IndexError, ValueError), \
                        open(f"/proc/self/task/{thread}/schedstat", "rb") as stats:
                    total += int(stats.read().split()[1])
        return total / 1e9


def fill(path: Path, count: int) -> None:
    db = open_database(path)
    store = DeadLetters(db, limit=100_000, keep="newest")
    with transaction(db):
        for i in range(count):
            store.add(db, DeadLetter(0, "in", "p" * 52, i, "kept", "application/json",
                                     b"x" * 200, 1, "test", "", "", 0.0, 0.0))
    db.close()


async def test_dead_purge_of_10000_letters_does_not_stall_the_loop(make: Make,
                                                                   tmp_path: Path) -> None:
    state = tmp_path / "receiver"
    state.mkdir()
    fill(state / DATABASE_NAME, 10_000)
    keeper = Keeper()
    receiver = await make([keeper], state=state, dead_letter_limit=100_000)
    sender = await make([Sender()], listen=[])
    peer = await sender.connect(receiver.addresses[0])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lags: list[float] = []
    raw: list[float] = []
    waited = CpuWait()

    async def probe() -> None:
        # Bounded: ends with the purge, and after 60 s (20,000 turns) at the most.
        for _ in range(20_000):
            if stop.is_set():
                return
            before, queued = loop.time(), waited()
            await asyncio.sleep(0.003)
            lag = loop.time() - before - 0.003
            raw.append(lag)
            lags.append(lag - min(lag, waited() - queued))

    async def traffic() -> int:
        sent = 0
        while not stop.is_set() and sent < 5_000:
            await sender.send(peer, "kept", sent)
            sent += 1
        return sent

    probing = asyncio.create_task(probe())
    sending = asyncio.create_task(traffic())
    purge = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PURGE, str(state / DATABASE_NAME),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(purge.communicate(), 60)
    await asyncio.sleep(0.2)  # the node's next commits, after the lock is free
    stop.set()
    sent = await sending
    await probing
    assert purge.returncode == 0, err.decode()
    assert b"purging 10000" in out
    await until(lambda: len(keeper.bodies) == sent, 30)
    assert receiver.delivery.dead is not None and receiver.delivery.dead.count() == 0
    lags.sort()
    raw.sort()
    p99, worst = lags[int(len(lags) * 0.99)], lags[-1]
    seen = (f"{len(lags)} probes; lag p99 {raw[int(len(raw) * 0.99)] * 1000:.0f} ms, "
            f"worst {raw[-1] * 1000:.0f} ms, before taking out the waits for a CPU")
    assert p99 < 0.05, f"the loop's own lag p99 was {p99 * 1000:.0f} ms ({seen})"
    # Waiting for the purge's lock would have stalled the loop for a second.
    assert worst < 0.5, f"the loop stalled for {worst * 1000:.0f} ms ({seen})"
