"""An acknowledged mapping loses nothing when the bridge node is SIGKILLed while the
external side keeps publishing: real ``p2phost run`` processes, a plain publisher.

The bridge node dials the ledger node (whose ``note`` topic is at-least-once) and maps a
fresh external name in to ``note``; a plain client publishes 120 numbered messages; the
bridge is killed after the first 30 reached the ledger and started again. Every number
reaches the ledger (some maybe twice: at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from tests.bridges.plain import BROKERS, plain_client
from tests.conftest import build_wheels, write_project
from tests.runtime.processes import RunningNode

pytestmark = [pytest.mark.services, pytest.mark.slow]
LEDGER = Path(__file__).resolve().parents[1] / "brokers" / "plugins" / "ledger"
COUNT = 120


@pytest.fixture(scope="session")
def ledger_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ledger test app (tests/brokers/plugins/ledger), built once."""
    return build_wheels([LEDGER], tmp_path_factory.mktemp("bridge-ledger"))["ledger"]


def numbers(path: Path) -> list[int]:
    """The ``n`` of every note the ledger wrote so far."""
    if not path.exists():
        return []
    return [json.loads(line)["body"]["n"] for line in path.read_text().split("\n")[:-1]]


async def until(what: str, check: Any, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("key", ["jetstream", "redis-stream", "amqp", "mqtt"])
async def test_a_killed_bridge_loses_nothing(key: str, tmp_path: Path,
                                             official_wheels: dict[str, Path],
                                             ledger_wheel: Path) -> None:
    broker = BROKERS[key]
    name = broker.unique_name()
    mapping = broker.mapping("in", name, "note", **{"redeliver-after": 1.0})
    wheels = [official_wheels[p] for p in ("tcp-transport", "json-codec")]
    ledger_root = write_project(
        tmp_path / "ledger", ["tcp-transport", "json-codec", "ledger"],
        wheels=[*wheels, ledger_wheel],
        config={"ledger": {"path": str(tmp_path / "ledger.jsonl")}})
    manifest = ledger_root / "p2phost.toml"
    doc = tomlkit.parse(manifest.read_text())
    doc["delivery"] = {"note": {"mode": "at-least-once"}}
    manifest.write_text(tomlkit.dumps(doc))
    async with plain_client(broker, mapping) as plain:
        ledger = await asyncio.to_thread(RunningNode, ledger_root)
        bridge_root = write_project(
            tmp_path / "bridge", ["tcp-transport", "json-codec", "broker-bridge"],
            wheels=[*wheels, official_wheels["broker-bridge"]],
            config={"broker-bridge": {"mappings": {"feed": mapping}}})
        doc = tomlkit.parse((bridge_root / "p2phost.toml").read_text())
        doc["node"]["connect"] = [ledger.address]  # type: ignore[index]
        (bridge_root / "p2phost.toml").write_text(tomlkit.dumps(doc))
        runs = [await asyncio.to_thread(RunningNode, bridge_root)]
        try:
            await until("the bridge to subscribe", lambda: "bridging" in runs[-1].stderr, 20)

            async def publish() -> None:
                for n in range(COUNT):
                    await plain.publish(json.dumps({"n": n}).encode())
                    await asyncio.sleep(0.01)

            publisher = asyncio.get_running_loop().create_task(publish())
            path = tmp_path / "ledger.jsonl"
            await until("30 notes", lambda: len(numbers(path)) >= 30, 30)
            await asyncio.to_thread(runs[-1].stop, signal.SIGKILL)
            runs.append(await asyncio.to_thread(RunningNode, bridge_root))
            await publisher
            with contextlib.suppress(AssertionError):  # the assertion below names the lost
                await until("every note", lambda: set(numbers(path)) == set(range(COUNT)), 40)
        finally:
            for run in [*runs, ledger]:
                await asyncio.to_thread(run.stop)
    got = numbers(path)
    assert set(got) == set(range(COUNT)), f"lost {sorted(set(range(COUNT)) - set(got))}"
