"""A relay's buffers are bounded in total, not only per circuit: circuits whose far ends
never read (an attacker holding both ends) each held up to buffer-bytes and one frame
(16 MiB at the default max-frame-size), so 64 circuits grew a relay by 1.4 GiB and 256
could take 4 GiB. Past ``buffer-total`` the circuit with the most unread bytes is closed;
a circuit whose far end reads keeps going."""

from __future__ import annotations

import asyncio
from typing import Any

from p2phost_sdk import TaskOwner
from tests.discovery.plugins import use_plugin_source

use_plugin_source("relay")

from p2phost_relay._forward import Forwards  # noqa: E402
from p2phost_relay._hop import End  # noqa: E402
from p2phost_relay._settings import settings_of  # noqa: E402

FRAME = 1000


async def test_the_relays_buffers_are_bounded_over_all_circuits() -> None:
    stuck = asyncio.Event()  # never set: far ends "b*" never take a frame
    delivered: list[str] = []

    async def send(peer: str, body: dict[str, Any]) -> None:
        if peer.startswith("b"):
            await stuck.wait()
        delivered.append(peer)

    failed: list[tuple[End, str]] = []
    tasks = TaskOwner("test")
    forwards: Forwards

    def on_fail(end: End, why: str, reason: str) -> None:
        failed.append((end, why))
        forward = forwards.pop(end)
        if forward is not None:
            forward.stop()

    forwards = Forwards(send, limit=10 * FRAME, timeout=60, tasks=tasks, on_fail=on_fail,
                        total=30 * FRAME)
    honest, honest_far = End("a-honest", "h"), End("honest-reader", "h2")
    peak = 0
    for _ in range(10):
        for i in range(20):  # 20 circuits to far ends that never read
            forwards.put(End("a", f"c{i}"), End(f"b{i}", "x"), {"op": "data"}, FRAME)
            peak = max(peak, forwards.total)
        forwards.put(honest, honest_far, {"op": "data"}, FRAME)
        await asyncio.sleep(0)
    assert peak <= 30 * FRAME + FRAME
    assert failed and all(end.peer == "a" and why == "not read" for end, why in failed)
    assert honest not in [end for end, _ in failed]
    await asyncio.sleep(0.01)
    assert delivered.count("honest-reader") == 10
    await tasks.close(1.0)


def test_buffer_total_is_a_setting() -> None:
    assert settings_of("relay", {}).buffer_total == 64 * 1024 * 1024
    assert settings_of("relay", {"buffer-total": 1024}).buffer_total == 1024
