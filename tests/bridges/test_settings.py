"""[config.broker-bridge] mistakes: each names the field and ends with a fix line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from p2phost_broker_bridge import CODECS, MappingError

from tests.bridges.conftest import BridgeSettings
from tests.conftest import run_cli, write_project

GOOD = {"direction": "in", "broker": "nats://127.0.0.1:4222", "name": "shop.orders",
        "topic": "orders"}


@pytest.mark.parametrize(("change", "field", "fix"), [
    ({"direction": "both"}, "direction", 'set direction = "in"'),
    ({"broker": "kafka://x"}, "broker", 'set broker = "nats://'),
    ({"kind": "queue"}, "kind", 'set kind = "subject"'),
    ({"codec": "xml"}, "codec", 'set codec = "json"'),
    ({"acknowledged": True}, "acknowledged", 'set kind = "jetstream"'),
    ({"kind": "jetstream"}, "stream", "add stream = "),
    ({"topics": "x"}, "topics", "remove topics"),
    ({"name": ""}, "name", 'add name = "..."'),
    ({"direction": "out", "peers": ["p"]}, "peers", "remove peers"),
])
def test_each_mistake_names_its_field_and_a_fix(change: dict[str, Any], field: str,
                                               fix: str) -> None:
    with pytest.raises(MappingError) as caught:
        BridgeSettings.from_config({"mappings": {"orders": {**GOOD, **change}}})
    text = str(caught.value)
    assert f"mappings.orders.{field}" in text
    assert f"\nfix: {fix}" in text


def test_codecs_round_trip_and_refuse_what_they_cannot_carry() -> None:
    for name, body in (("json", {"a": [1, 2]}), ("msgpack", {"a": b"\x00"}), ("text", "hé"),
                       ("raw", b"\xff\x00")):
        assert CODECS[name].decode(CODECS[name].encode(body)) == body
    for name, payload in (("json", b"{"), ("msgpack", b"\xc1"), ("text", b"\xff")):
        with pytest.raises(Exception, match=f"not {name}"):
            CODECS[name].decode(payload)
    with pytest.raises(Exception, match="carries bytes or str"):
        CODECS["raw"].encode({"a": 1})


def test_the_node_refuses_to_start_with_the_fix(tmp_path: Path,
                                                official_wheels: dict[str, Path]) -> None:
    plugins = ["tcp-transport", "json-codec", "broker-bridge"]
    root = write_project(tmp_path / "p", plugins, wheels=[official_wheels[p] for p in plugins],
                         config={"broker-bridge": {"mappings": {"orders": {
                             **GOOD, "acknowledged": True}}}})
    result = run_cli("run", "--check", cwd=root)
    assert result.returncode != 0
    assert "mappings.orders.acknowledged" in result.stderr + result.stdout
    assert 'fix: set kind = "jetstream" in [config.broker-bridge.mappings.orders]' in \
        result.stderr + result.stdout
