"""``p2phost describe ADDR`` against a running node: its topics, delivery modes, schemas."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import tomlkit

import p2phost
from p2phost import Message
from tests.conftest import run_cli, service_or_skip
from tests.library.conftest import StateDir, manifest

MEDIA = {"tcp": ("tcp://127.0.0.1:0", ("tcp-transport", "json-codec", "noise-security")),
         "redis": ("redis://127.0.0.1:6379/0",
                   ("redis-transport", "json-codec", "noise-security"))}


@dataclasses.dataclass
class Order:
    id: int
    qty: int


@pytest.mark.parametrize("medium", sorted(MEDIA))
async def test_describe_shows_topics_modes_and_a_models_schema(state_dir: StateDir,
                                                               medium: str) -> None:
    listen, plugins = MEDIA[medium]
    if medium == "redis":
        service_or_skip("Redis", 6379)
    server = p2phost.open_node(manifest=manifest([listen], plugins=plugins, name="shop"),
                               state_dir=state_dir("shop"))

    @server.handler("orders", model=Order, delivery="at-least-once")
    async def orders(message: Message) -> None:
        pass

    @server.handler("status")
    async def status(message: Message) -> str:
        return "ok"

    cli = state_dir("cli")
    (cli / "p2phost.toml").write_text(tomlkit.dumps(manifest(plugins=plugins, name="cli")))
    async with server:
        address = server.addresses[0]
        as_json = await asyncio.to_thread(run_cli, "describe", address, "--json", cwd=cli)
        text = await asyncio.to_thread(run_cli, "describe", address, cwd=cli)
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["peer_id"] == server.peer_id and answer["name"] == "shop"
    assert answer["security"] == ("noise" if medium == "tcp" else "sealed")
    topics = {t["topic"]: t for t in answer["topics"]}
    assert topics["orders"]["delivery"] == "at-least-once"
    assert topics["orders"]["schema"]["$defs"]["Order"]["properties"]["qty"] == {
        "type": "integer"}
    assert topics["status"] == {"topic": "status", "delivery": "at-most-once", "schema": None}
    assert text.returncode == 0, text.stderr
    assert "orders  at-least-once     schema below" in text.stdout
    assert "schema of orders:" in text.stdout and '"qty"' in text.stdout
