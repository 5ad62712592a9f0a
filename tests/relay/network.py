"""Real p2phost nodes in one process on the memory transport, with the relay plugin."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from p2phost._runtime import Node, NodeOptions
from p2phost_sdk import Identity, PluginContext
from tests.discovery.plugins import started_nodes, use_plugin_source

for _name in ("relay", "memory-transport", "json-codec", "noise-security", "echo"):
    use_plugin_source(_name)

from p2phost_echo import EchoApp  # noqa: E402
from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_memory_transport import MemoryTransport  # noqa: E402
from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_relay import RelayApp, RelayService, RelayTransport, relay_of  # noqa: E402

Make = Callable[..., "asyncio.Future[tuple[Node, RelayService]]"]


@asynccontextmanager
async def relay_network(capacity: int = 1024) -> AsyncIterator[Callable[..., Any]]:
    """``await make(config, listen=[...], secure=True, apps=(...))``: a started node (with
    the relay and echo apps, and ``apps``) and its relay service."""
    memory = MemoryTransport(capacity=capacity)  # frames in flight per pipe direction

    async def make(config: dict[str, Any] | None = None, *, listen: tuple[str, ...] = (),
                   secure: bool = True, mem: bool = True,
                   peer_limit: int = 64,
                   max_frame_size: int = 16 * 1024 * 1024,
                   mailbox_size: int | None = None,
                   client: bool = False,
                   keepalive_timeout: float = 15.0, keepalive_interval: float = 5.0,
                   apps: tuple[Any, ...] = ()) -> tuple[Node, RelayService]:
        identity = Identity.generate()
        context = PluginContext(name="relay", config=config or {}, peer_id=identity.peer_id,
                                state_dir=None, max_frame_size=max_frame_size)  # type: ignore[arg-type]
        service = relay_of(context)
        name = f"mem://relay-test-{uuid.uuid4().hex[:10]}"
        app_type: type[RelayApp] = RelayApp if mailbox_size is None else \
            type("SmallRelayApp", (RelayApp,), {"mailbox_size": mailbox_size})
        transports: dict[str, Any] = {s: RelayTransport(service) for s in RelayTransport.schemes}
        transports["mem"] = memory
        node = Node(identity, transports=transports, codecs={"application/json": JsonCodec()},
                    security=[NoiseSecurity()] if secure else [],
                    apps=[app_type(service), EchoApp(), *apps],
                    options=NodeOptions(name=name, listen=((name,) if mem else ()) + listen,
                                        drain_timeout=2.0, peer_limit=peer_limit,
                                        client=client, keepalive_timeout=keepalive_timeout,
                                        keepalive_interval=keepalive_interval,
                                        max_frame_size=max_frame_size))
        await start(node)
        return node, service

    async with started_nodes() as start:
        yield make
