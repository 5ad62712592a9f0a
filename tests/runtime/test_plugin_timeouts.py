"""Every wait on a plugin is bounded: a plugin that hangs is named, and the node starts
or stops anyway within its bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from p2phost._runtime import ListenError, Node, NodeOptions
from p2phost_sdk import (
    AcceptHandler,
    App,
    Connection,
    Discovery,
    DiscoveryEvents,
    Identity,
    Listener,
    Transport,
)
from p2phost_sdk.inbox import Deliver, InboxTransport, Medium, MediumAddress
from tests.runtime.conftest import CODECS, build_node


class _Listener(Listener):
    def __init__(self, hang: bool) -> None:
        self.addresses = ["hang://here"]
        self.hang = hang

    async def close(self) -> None:
        if self.hang:
            await asyncio.Event().wait()


class HangingTransport(Transport):
    """``hang://``: its listen, its listener's close, or its close never return."""

    schemes = ("hang",)

    def __init__(self, where: str) -> None:
        self.where = where

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        if self.where == "listen":
            await asyncio.Event().wait()
        return _Listener(self.where == "listener")

    async def dial(self, address: str, *, timeout: float) -> Connection:
        raise NotImplementedError

    async def close(self) -> None:
        if self.where == "close":
            await asyncio.Event().wait()


class HangingDiscovery(Discovery):
    """Its start or its stop never returns."""

    def __init__(self, where: str) -> None:
        self.where = where

    async def start(self, events: DiscoveryEvents) -> None:
        if self.where == "start":
            await asyncio.Event().wait()

    async def stop(self) -> None:
        if self.where == "stop":
            await asyncio.Event().wait()


class HangingMedium(Medium):
    """A broker that takes the connection but never answers opening the inbox."""

    async def connect(self) -> None:
        pass

    async def open_inbox(self, name: str, deliver: Deliver) -> None:
        await asyncio.Event().wait()

    async def append(self, name: str, records: Sequence[bytes]) -> None:
        pass

    async def close(self, *, delete_inbox: bool) -> None:
        pass


class HangingInboxTransport(InboxTransport):
    """``hang://`` over a medium whose ``open_inbox`` never returns."""

    schemes = ("hang",)
    default_port = 1
    address_example = "hang://HOST"

    def make_medium(self, address: MediumAddress) -> Medium:
        return HangingMedium()


def node(transport: Transport, discovery: list[Discovery] | None = None,
         identity: Identity | None = None) -> Node:
    return Node(identity or Identity.generate(), transports={"hang": transport},
                codecs={"application/json": CODECS["application/json"]()},
                discovery=discovery or [],
                options=NodeOptions(listen=["hang://here"], plugin_timeout=0.5))


async def test_a_listen_that_never_returns_fails_start_up_naming_the_plugin() -> None:
    started = time.monotonic()
    with pytest.raises(ListenError, match=r"HangingTransport did not finish listening on "
                                          r"hang://here within 0\.5s"):
        await asyncio.wait_for(node(HangingTransport("listen")).start(), 10)
    assert time.monotonic() - started < 5


async def test_an_open_inbox_that_never_returns_fails_start_up_naming_the_plugin() -> None:
    identity = Identity.generate()
    hanging = HangingInboxTransport(peer_id=identity.peer_id)
    started = time.monotonic()
    with pytest.raises(ListenError, match=r"HangingInboxTransport did not finish listening "
                                          r"on hang://here within 0\.5s"):
        await asyncio.wait_for(node(hanging, identity=identity).start(), 10)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("where", ["listener", "close"])
async def test_a_close_that_never_returns_is_named_and_shutdown_finishes(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = node(HangingTransport(where))
    await running.start()
    started = time.monotonic()
    await asyncio.wait_for(running.close(), 10)
    assert time.monotonic() - started < 5
    assert "HangingTransport did not finish closing" in caplog.text


@pytest.mark.parametrize("where", ["start", "stop"])
async def test_a_discovery_that_hangs_is_named_and_the_node_carries_on(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = node(HangingTransport(""), [HangingDiscovery(where)])
    await asyncio.wait_for(running.start(), 10)
    await asyncio.wait_for(running.close(), 10)
    doing = "starting" if where == "start" else "stopping"
    assert f"HangingDiscovery did not finish {doing} discovery within" in caplog.text


class HangsOnStop(App):
    """An app whose stop() never returns."""

    name = "hangs-a"

    async def stop(self) -> None:
        await asyncio.Event().wait()


class AlsoHangsOnStop(HangsOnStop):
    name = "hangs-b"


class FailsOnStop(App):
    name = "fails"

    async def stop(self) -> None:
        raise RuntimeError("disk gone")


class CancelledOnStop(App):
    name = "cancelled"

    async def stop(self) -> None:
        raise asyncio.CancelledError


class SlowToStop(App):
    name = "slow"
    stopped = False

    async def stop(self) -> None:
        await asyncio.sleep(0.3)
        self.stopped = True


async def test_apps_that_hang_on_stop_cost_the_plugin_timeout_once_each_named(
        caplog: pytest.LogCaptureFixture) -> None:
    """Apps are stopped at once (docs/library.md: a plugin that hangs while closing costs
    up to the plugin timeout more): two that hang cost it once, not twice; each that
    hangs, fails or cancels itself is named, and the others still finish stopping."""
    bound, slow = 1.0, SlowToStop()
    apps = [HangsOnStop(), FailsOnStop(), AlsoHangsOnStop(), CancelledOnStop(), slow]
    running = build_node("tcp", apps, listen=["tcp://127.0.0.1:0"], drain_timeout=0.2,
                         plugin_timeout=bound)
    await running.start()
    started = time.monotonic()
    await asyncio.wait_for(running.close(), 30)
    took = time.monotonic() - started
    assert took < 0.2 + bound + 0.5, f"close took {took:.1f}s: each stuck app cost {bound}s"
    assert slow.stopped
    for name in ("HangsOnStop", "AlsoHangsOnStop"):
        assert f"{name} did not finish stopping its app within" in caplog.text
    assert "FailsOnStop failed stopping its app: RuntimeError: disk gone" in caplog.text
    assert "CancelledOnStop was cancelled stopping its app" in caplog.text
