"""Typed contracts: handler(model=) with a dataclass, a msgspec Struct, a pydantic model."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgspec
import pydantic
import pytest

import p2phost
from p2phost import Message
from p2phost_sdk import RemoteError, contract_of
from tests.library.conftest import StateDir, manifest, mem_address


@dataclasses.dataclass
class Line:
    sku: str
    qty: int


@dataclasses.dataclass
class Order:
    id: int
    lines: list[Line]


class OrderStruct(msgspec.Struct):
    id: int
    lines: list[Line]


class OrderModel(pydantic.BaseModel):
    id: int
    lines: list[dict[str, int]]


GOOD: dict[str, Any] = {"id": 1, "lines": [{"sku": "a", "qty": 2}]}
BAD: dict[str, Any] = {"id": 1, "lines": [{"sku": "a", "qty": "two"}]}


@pytest.mark.parametrize("model", [Order, OrderStruct])
async def test_a_body_is_checked_converted_and_its_schema_advertised(
        state_dir: StateDir, model: type) -> None:
    server = p2phost.open_node(manifest=manifest([mem_address()]), state_dir=state_dir("s"))

    @server.handler("orders", model=model)
    async def orders(message: Message) -> Any:
        assert isinstance(message.body, model)
        return message.body  # a model instance goes back as plain data

    async with server, p2phost.open_node(manifest=manifest(), state_dir=state_dir("c")) as c:
        peer = await c.connect(server.addresses[0])
        assert await c.request(peer, "orders", GOOD) == GOOD
        # send/request take model instances; the reply can come back as one.
        sent = model(id=2, lines=[Line("b", 3)])
        assert await c.request(peer, "orders", sent, model=model) == sent
        with pytest.raises(p2phost.BodyInvalid, match="the reply to a 'orders' request"):
            await c.request(peer, "orders", GOOD, model=OrderModel)
        with pytest.raises(RemoteError, match=r"\$\.lines\[0\]\.qty") as failed:
            await c.request(peer, "orders", BAD)
        assert "BodyInvalid" in failed.value.remote_message
        assert server.stats()["topics"]["orders"]["failed"] == 1
        hello = c.running.hello_of(peer)
        assert hello is not None
        schema = hello.extra["schemas"]["orders"]
        assert schema == contract_of(model).schema()
        assert "qty" in str(schema)


async def test_pydantic_errors_name_the_field(state_dir: StateDir) -> None:
    server = p2phost.open_node(manifest=manifest([mem_address()]), state_dir=state_dir("s"))

    @server.handler("orders", model=OrderModel)
    async def orders(message: Message) -> OrderModel:
        assert isinstance(message.body, OrderModel)
        return message.body

    async with server, p2phost.open_node(manifest=manifest(), state_dir=state_dir("c")) as c:
        peer = await c.connect(server.addresses[0])
        good = {"id": 1, "lines": [{"qty": 2}]}
        assert await c.request(peer, "orders", OrderModel.model_validate(good)) == good
        with pytest.raises(RemoteError, match=r"\$\.lines\[0\]\.qty"):
            await c.request(peer, "orders", {"id": 1, "lines": [{"qty": "two"}]})


def test_a_model_of_another_kind_is_refused_at_registration(state_dir: StateDir) -> None:
    node = p2phost.open_node(manifest=manifest(), state_dir=state_dir("n"))

    class Plain:
        qty: int

    with pytest.raises(p2phost.ModelError, match="not a dataclass, a msgspec Struct or a "
                                                 "pydantic model"):
        node.handler("orders", model=Plain)(lambda message: None)
    with pytest.raises(p2phost.ModelError):
        node.handler("orders", model=dict)(lambda message: None)


class Shop(p2phost.App):
    """An app as a plugin writes it: the SDK's handler(model=) works there too."""

    name = "shop"

    @p2phost.handler("buy", model=OrderStruct)
    async def buy(self, message: Message) -> Any:
        return {"lines": len(message.body.lines)}


async def test_an_app_with_a_model_and_a_schema_too_large_for_the_hello(
        state_dir: StateDir) -> None:
    huge = msgspec.defstruct("Huge", [(f"field_{i:05d}_{'x' * 40}", int)
                                      for i in range(1000)])
    server = p2phost.open_node(manifest=manifest([mem_address()]), state_dir=state_dir("s"))
    server.add_app(Shop())
    server.handler("huge", model=huge)(lambda message: None)
    async with server, p2phost.open_node(manifest=manifest(), state_dir=state_dir("c")) as c:
        peer = await c.connect(server.addresses[0])
        assert await c.request(peer, "buy", GOOD) == {"lines": 1}
        with pytest.raises(RemoteError, match="missing required field `id`"):
            await c.request(peer, "buy", {"lines": []})
        hello = c.running.hello_of(peer)
        assert hello is not None
        assert set(hello.extra["schemas"]) == {"buy"}
        assert hello.extra["schemas_omitted"] == ["huge"]


async def test_a_bad_body_on_an_acknowledged_topic_is_dead_lettered_at_once(
        state_dir: StateDir) -> None:
    server = p2phost.open_node(manifest=manifest([mem_address()]), state_dir=state_dir("s"))
    server.handler("orders", model=Order, delivery="at-least-once")(lambda message: None)
    async with server, p2phost.open_node(manifest=manifest(), state_dir=state_dir("c")) as c:
        peer = await c.connect(server.addresses[0])
        await c.send(peer, "orders", BAD)
        await c.send(peer, "orders", GOOD)
        counters: dict[str, int] = {}
        for _ in range(200):  # until both are settled (bounded: 10 s)
            counters = server.stats()["topics"].get("orders", {})
            if counters.get("handled", 0) + counters.get("dead_lettered", 0) >= 2:
                break
            await asyncio.sleep(0.05)
        assert counters["dead_lettered"] == 1 and counters["retried"] == 0
        assert counters["handled"] == 1
