"""A coverage-guided fuzzer (atheris) for a running node.

Run: ``python atheris_node.py -max_total_time=SECONDS``.

Each input is cut into frames and thrown at in-process nodes over the memory transport:
one without a security plugin (the frames reach the hello, envelope and dispatch code),
one with noise-security (they reach its handshake), and at a sealer opening an inbox
frame. After every input a well-behaved peer, connected to both nodes from the start,
must still get its echo back, and nothing may have logged an error: libFuzzer reports
any exception as a crash, with the input that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import atheris

_ROOT = Path(__file__).resolve().parents[2]
for _name in ("memory-transport", "json-codec", "noise-security", "echo"):
    sys.path.insert(0, str(_ROOT / "official-plugins" / _name / "src"))

with atheris.instrument_imports(include=["p2phost", "p2phost_sdk", "p2phost_noise_security"]):
    from p2phost_echo import EchoApp
    from p2phost_json_codec import JsonCodec
    from p2phost_memory_transport import MemoryTransport
    from p2phost_noise_security import NoiseSecurity

    from p2phost._runtime import Node, NodeOptions
    from p2phost._runtime.wire._sealed import Sealer, SealError
    from p2phost_sdk import Identity, P2PHostError


class _Errors(logging.Handler):
    """Remembers every error a node logs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


ERRORS = _Errors()
logging.getLogger("p2phost").addHandler(ERRORS)
logging.getLogger("p2phost").setLevel(logging.ERROR)  # refusals are warnings: not shown
LOOP = asyncio.new_event_loop()
TRANSPORT = MemoryTransport(max_frame_size=65536)


def _node(name: str, secure: bool, apps: list[EchoApp] | None = None) -> Node:
    return Node(Identity.generate(), transports={"mem": TRANSPORT},
                codecs={"application/json": JsonCodec()},
                security=[NoiseSecurity(max_frame_size=65536)] if secure else [],
                apps=apps or [],
                options=NodeOptions(listen=[f"mem://{name}"] if apps else [],
                                    max_frame_size=65536, handshake_timeout=0.2))


async def _start() -> tuple[list[Node], list[tuple[Node, str]]]:
    servers = [_node("plain", False, [EchoApp()]), _node("noise", True, [EchoApp()])]
    friends = [_node("", False), _node("", True)]
    pairs = []
    for server, friend in zip(servers, friends, strict=True):
        await server.start()
        await friend.start()
        pairs.append((friend, await friend.connect(server.addresses[0])))
    return servers, pairs


SERVERS, FRIENDS = LOOP.run_until_complete(_start())
SEALER = Sealer(Identity.generate(), replay_window=60)
SENDER = Identity.generate().peer_id
ROUNDS = [0]


async def _throw(address: str, frames: list[bytes]) -> None:
    connection = await TRANSPORT.dial(address, timeout=1)
    with contextlib.suppress(P2PHostError, TimeoutError):
        async with asyncio.timeout(0.05):
            for frame in frames:
                await connection.send(frame)
            while True:
                await connection.recv()
    await connection.close()


async def _check() -> None:
    ROUNDS[0] += 1
    for friend, peer in FRIENDS:
        async with asyncio.timeout(5):
            assert await friend.request(peer, "echo", ROUNDS[0]) == ROUNDS[0]


def test_one_input(data: bytes) -> None:
    """Throw ``data`` at a node (or a sealer), then check that everything still works."""
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 2)
    frames = []
    while fdp.remaining_bytes():
        frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    if target == 2:
        for frame in frames:
            with contextlib.suppress(SealError):
                SEALER.open(frame, SENDER)
        return
    LOOP.run_until_complete(_throw(SERVERS[target].addresses[0], frames))
    LOOP.run_until_complete(_check())
    if ERRORS.records:
        raise AssertionError("a node logged an error:\n" + "\n".join(ERRORS.records))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
