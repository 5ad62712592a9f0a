"""Channel security over quic:// and ws:// as over tcp://: noise-security runs its handshake
on their connections, a relay in front of a WebSocket node sees only ciphertext, and real
nodes over them talk only through the security plugin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from p2phost_sdk import Connection, Transport
from tests.conftest import run_cli, write_project
from tests.discovery.plugins import use_plugin_source
from tests.runtime.processes import RunningNode

from .security_support import BOB, TIMEOUT, Mitm, handshake, mitm_process

for _name in ("quic-transport", "websocket-transport", "noise-security"):
    use_plugin_source(_name)

from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_quic_transport import QuicTransport  # noqa: E402
from p2phost_websocket_transport import WebSocketTransport  # noqa: E402

TRANSPORTS: dict[str, tuple[str, str, Callable[[], Transport]]] = {
    "quic": ("quic-transport", "quic://127.0.0.1:0", QuicTransport),
    "websocket": ("websocket-transport", "ws://127.0.0.1:0",
                  lambda: WebSocketTransport(proxy="")),
}


@asynccontextmanager
async def connected(transport: Transport, listen: str, via: Callable[[str], str] = str,
                    ) -> AsyncIterator[tuple[Connection, Connection]]:
    """A connection dialled to a listener of ``transport`` (through ``via(address)``), and
    the listener's end of it."""
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def accept(connection: Connection) -> None:
        await accepted.put(connection)

    listener = await transport.listen(listen, accept)
    try:
        async with asyncio.timeout(TIMEOUT):
            dialled = await transport.dial(via(listener.addresses[0]), timeout=TIMEOUT)
            accepting = await accepted.get()
        yield dialled, accepting
        await dialled.close()
        await accepting.close()
    finally:
        await listener.close()
        await transport.close()


@pytest.mark.parametrize("medium", sorted(TRANSPORTS))
async def test_noise_secures_a_connection_over(medium: str) -> None:
    _, listen, make = TRANSPORTS[medium]
    async with connected(make(), listen) as (dialled, accepting):
        alice, bob = await handshake(NoiseSecurity, dialled, accepting, expect_bob=BOB.peer_id)
        assert alice.remote_peer_id == BOB.peer_id
        big = bytes(range(256)) * 4096  # 1 MiB: many QUIC packets, one WebSocket message
        # Each round trip has its own bound: 20 MiB through QUIC and Noise is CPU work
        # (1.5 s alone, 7 s beside a CPU hog and two more runs), and one bound over all
        # of it timed out at load average 15-20; a round that hangs still fails.
        for i in range(20):
            async with asyncio.timeout(TIMEOUT):
                await alice.send(b"to bob %d" % i)
                assert await bob.recv() == b"to bob %d" % i
                await bob.send_many([b"to alice", big])
                assert [await alice.recv(), await alice.recv()] == [b"to alice", big]
        await alice.close()
        await bob.close()


async def test_a_relay_in_front_of_a_websocket_node_sees_only_ciphertext() -> None:
    marker = b"PLAINTEXT-MARKER"
    with contextlib.ExitStack() as stack:
        relays: list[Mitm] = []

        def through_relay(address: str) -> str:
            relay = stack.enter_context(mitm_process(address.replace("ws://", "tcp://"), marker))
            relays.append(relay)
            return relay.address.replace("tcp://", "ws://")

        async with connected(WebSocketTransport(proxy=""), "ws://127.0.0.1:0",
                             through_relay) as (dialled, accepting):
            alice, bob = await handshake(NoiseSecurity, dialled, accepting)
            async with asyncio.timeout(TIMEOUT):
                for i in range(50):
                    await alice.send(marker + b" %d" % i)
                    assert await bob.recv() == marker + b" %d" % i
                    await bob.send(marker * 100)
                    assert await alice.recv() == marker * 100
            assert relays[0].command("report") == "plaintext-seen 0"
            await alice.close()
            await bob.close()


@pytest.mark.parametrize("medium", sorted(TRANSPORTS))
def test_nodes_in_separate_processes_over(medium: str, tmp_path: Path,
                                          official_wheels: dict[str, Path]) -> None:
    plugin, listen, _ = TRANSPORTS[medium]
    plugins = [plugin, "json-codec", "echo", "noise-security"]
    config = {"websocket-transport": {"proxy": ""}} if medium == "websocket" else {}

    def project(name: str, with_plugins: list[str]) -> Path:
        return write_project(tmp_path / name, with_plugins, name=name, listen=[listen],
                             wheels=[official_wheels[p] for p in with_plugins], config=config)

    node = RunningNode(project("server", plugins))
    try:
        assert node.address.startswith(listen.split(":0")[0])
        client = project("client", plugins)
        done = run_cli("ping", node.address, "--count", "3", "--interval", "0", cwd=client)
        assert done.returncode == 0 and "3 sent, 3 replies" in done.stdout, done
        done = run_cli("send", node.address, "echo", '{"a": [1]}', "--request", cwd=client)
        assert (done.returncode, done.stdout.strip()) == (0, '{"a": [1]}'), done
        # A node without the security plugin cannot talk to it at all.
        bare = project("bare", plugins[:-1])
        done = run_cli("ping", node.address, "--count", "1", cwd=bare)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done
        assert "handshake failed" in done.stderr, done
    finally:
        assert node.stop() == 0
    assert "NOT authenticated" not in node.stderr
    # The server logs the refusal before the client even hears of it: over quic:// a
    # connection that never wrote a frame closes without waiting for the peer.
    assert f"{NoiseSecurity().protocol} handshake with" in node.stderr, node.stderr
