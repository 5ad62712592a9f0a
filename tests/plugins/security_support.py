"""What the channel-security tests share: real TCP pairs, a man-in-the-middle process,
and the fuzzing harness that throws random and mutated frames at a plugin."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    HandshakeError,
    Identity,
    SecureConnection,
    Security,
)
from p2phost_sdk.testing import memory_pipe
from tests.conftest import run_cli, write_project
from tests.discovery.plugins import use_plugin_source
from tests.runtime.processes import RunningNode

use_plugin_source("tcp-transport")

from p2phost_tcp_transport import TcpTransport  # noqa: E402

ALICE, BOB = Identity.generate(), Identity.generate()
#: Seconds any network wait of these tests may take.
TIMEOUT = 10.0


class Gate(Connection):
    """A memory-pipe end whose ``try_send`` hands a frame over only while ``open``."""

    def __init__(self, inner: Connection) -> None:
        self.inner, self.open = inner, False

    async def send(self, frame: bytes) -> None:
        await self.inner.send(frame)

    async def send_many(self, frames: list[bytes]) -> None:
        await self.inner.send_many(frames)

    def try_send(self, frame: bytes) -> bool:
        if not self.open:
            return False
        outbound = self.inner._outbound  # type: ignore[attr-defined]  # the pipe's queue
        outbound.frames.append(frame)
        outbound.readable.set()
        return True

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self) -> None:
        await self.inner.close()


class Recorder(Connection):
    """Passes frames through to ``inner`` and keeps a copy of every frame sent."""

    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self.remote_address = inner.remote_address

    async def send(self, frame: bytes) -> None:
        self.sent.append(frame)
        await self.inner.send(frame)

    async def send_many(self, frames: list[bytes]) -> None:
        self.sent.extend(frames)
        await self.inner.send_many(frames)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self) -> None:
        await self.inner.close()


async def handshake(
    make: Callable[[], Security], initiator: Connection, responder: Connection, *,
    expect_bob: str | None = None,
) -> tuple[SecureConnection, SecureConnection]:
    """Alice (initiator) and Bob (responder) secure a connection; both must succeed."""
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.gather(
            make().secure(initiator, identity=ALICE, initiator=True,
                          expected_peer_id=expect_bob, timeout=TIMEOUT),
            make().secure(responder, identity=BOB, initiator=False,
                          expected_peer_id=None, timeout=TIMEOUT),
        )


async def initiator_transcript(make: Callable[[], Security]) -> list[bytes]:
    """The frames a genuine initiator sends during one real handshake."""
    a, b = memory_pipe()
    recorder = Recorder(a)
    alice, bob = await handshake(make, recorder, b)
    await alice.close()
    await bob.close()
    return recorder.sent


@asynccontextmanager
async def secured_over_tcp(
    make: Callable[[], Security], *, mitm_marker: bytes | None = None,
) -> AsyncIterator[tuple[Mitm | None, SecureConnection, SecureConnection]]:
    """Alice dials Bob over real TCP on loopback (through a MITM process when
    ``mitm_marker`` is given) and both secure the connection: ``(mitm, alice, bob)``."""
    transport = TcpTransport()
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def accept(connection: Connection) -> None:
        await accepted.put(connection)

    listener = await transport.listen("tcp://127.0.0.1:0", accept)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(listener.close)
        mitm = None
        address = listener.addresses[0]
        if mitm_marker is not None:
            mitm = stack.enter_context(mitm_process(address, mitm_marker))
            address = mitm.address
        async with asyncio.timeout(TIMEOUT):
            dialled = await transport.dial(address, timeout=TIMEOUT)
            stack.push_async_callback(dialled.close)
            listening_end = await accepted.get()
            stack.push_async_callback(listening_end.close)
        alice, bob = await handshake(make, dialled, listening_end)
        yield mitm, alice, bob


# A man in the middle as its own process: relays TCP to 127.0.0.1:PORT, answers "report"
# with how often it saw MARKER in the clear, after "flip" alters one byte of the next
# chunk the client sends, and on "replay" sends the client's last chunk again. It lives
# 60 s at most.
_MITM = r"""
import asyncio, sys, threading
port, marker = int(sys.argv[1]), sys.argv[2].encode()
flip, seen, last = threading.Event(), [0], {}

async def pipe(reader, writer, from_client):
    try:
        while data := await reader.read(65536):
            seen[0] += data.count(marker)
            if from_client and flip.is_set():
                flip.clear()
                i = len(data) // 2
                data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
                print("flipped", flush=True)
            if from_client:
                last.update(data=data, writer=writer, loop=asyncio.get_running_loop())
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.gather(pipe(reader, upstream_writer, True),
                         pipe(upstream_reader, writer, False))

def commands():
    for line in sys.stdin:
        if line.strip() == "flip":
            flip.set()
            print("armed", flush=True)
        elif line.strip() == "report":
            print("plaintext-seen", seen[0], flush=True)
        elif line.strip() == "replay":
            last["loop"].call_soon_threadsafe(last["writer"].write, last["data"])
            print("replayed", len(last["data"]), flush=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    threading.Thread(target=commands, daemon=True).start()
    await asyncio.sleep(60)

asyncio.run(main())
"""


class Mitm:
    """A running man-in-the-middle process (see ``_MITM``)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert process.stdout is not None
        self.address = f"tcp://127.0.0.1:{int(process.stdout.readline())}"

    def command(self, line: str) -> str:
        """Send a command and return its answer line."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def wait_line(self) -> str:
        """The next line the relay prints."""
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()


@contextmanager
def mitm_process(target: str, marker: bytes) -> Iterator[Mitm]:
    """Start a relay process in front of ``tcp://127.0.0.1:PORT`` ``target``."""
    port = target.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [sys.executable, "-c", _MITM, port, marker.decode()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        yield Mitm(process)
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)


# -- fuzzing --------------------------------------------------------------------------------

@st.composite
def mutation_of(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes changed, maybe cut short, maybe with bytes added."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    data += draw(st.binary(max_size=8))
    return bytes(data)


def attacks(transcript: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    """Frames to throw at a responder: random ones, or a genuine transcript mutated."""
    random_frames = st.lists(st.binary(max_size=2048), max_size=4)
    mutated = st.tuples(*(st.one_of(st.just(f), mutation_of(f)) for f in transcript)).map(list)
    return st.one_of(random_frames, mutated)


async def attack_responder(
    security: Security, frames: list[bytes], *, hang_up: bool, timeout: float
) -> None:
    """Throw ``frames`` at a responder; it must refuse, within its timeout, and only so."""
    mine, attacker = memory_pipe()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await attacker.send_many(frames)
    if hang_up:
        await attacker.close()
    try:
        async with asyncio.timeout(timeout + TIMEOUT):
            await security.secure(mine, identity=BOB, initiator=False,
                                  expected_peer_id=None, timeout=timeout)
    except HandshakeError:
        pass
    else:
        raise AssertionError(f"a responder accepted attack frames {frames!r}")
    elapsed = loop.time() - started
    assert elapsed < timeout + 1.0, f"the handshake outlived its {timeout}s timeout: {elapsed}"
    await attacker.close()


async def attack_secured(make: Callable[[], Security], frames: list[bytes]) -> list[bytes]:
    """Inject ``frames`` into a secured connection's medium; what Alice receives then.

    Alice must end with ConnectionClosed (after the injected frames and a hang-up), never
    another error and never a frame that was not sent by Bob.
    """
    a, b = memory_pipe()
    alice, bob = await handshake(make, a, b)
    await b.send_many(frames)  # straight onto the medium, under Bob's encryption layer
    await b.close()
    received: list[bytes] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                received.append(await alice.recv())
    except ConnectionClosed:
        pass
    await alice.close()
    await bob.close()
    return received


async def sealed_frame(make: Callable[[], Security], plaintext: bytes) -> bytes:
    """What Bob's secured connection puts on the medium for one frame ``plaintext``."""
    a, b = memory_pipe()
    recorder = Recorder(b)
    alice, bob = await handshake(make, a, recorder)
    recorder.sent.clear()
    await bob.send(plaintext)
    await alice.close()
    await bob.close()
    return b"".join(recorder.sent)


# Each subclass of SecurityOnTheWire runs the fuzz tests on its own plugin: a different
# executor on purpose (and with no example database, nothing is replayed across them).
_FUZZ = settings(deadline=None, database=None,
                 suppress_health_check=[HealthCheck.differing_executors])


class SecurityOnTheWire:
    """Tests of a channel security on real TCP and under fuzzing; subclass, set ``make``.

    Over TCP, through a relay process: the relay sees only ciphertext, and a byte it
    alters closes the connection. Fuzzing: random frames and mutations of genuine ones
    are thrown at a responder mid-handshake and at a secured connection: the plugin never
    raises anything but HandshakeError or ConnectionClosed, never outlives its timeout,
    never delivers a forged frame, and the same Security instance keeps serving a
    well-behaved peer afterwards.
    """

    #: Makes the Security under test.
    make: Callable[[], Security]
    #: The plugin's name, for the tests that run it in real nodes.
    plugin: str
    #: The responder's handshake timeout while under attack.
    timeout = 0.3

    def test_nodes_in_separate_processes_talk_only_through_the_plugin(
            self, tmp_path: Path, official_wheels: dict[str, Path]) -> None:
        def project(name: str, plugins: list[str]) -> Path:
            return write_project(tmp_path / name, plugins, name=name,
                                 wheels=[official_wheels[p] for p in plugins])

        basic = ["tcp-transport", "json-codec", "echo"]
        node = RunningNode(project("server", [*basic, self.plugin]))
        try:
            client = project("client", [*basic, self.plugin])
            done = run_cli("ping", node.address, "--count", "3", "--interval", "0", cwd=client)
            assert done.returncode == 0 and "3 sent, 3 replies" in done.stdout, done
            done = run_cli("send", node.address, "echo", '{"a": [1]}', "--request", cwd=client)
            assert (done.returncode, done.stdout.strip()) == (0, '{"a": [1]}'), done
            # A node without the plugin cannot talk to it at all.
            done = run_cli("ping", node.address, "--count", "1", cwd=project("bare", basic))
            assert done.returncode != 0 and "Traceback" not in done.stderr, done
        finally:
            assert node.stop() == 0
        assert "NOT authenticated" not in node.stderr
        assert f"{self.make().protocol} handshake with" in node.stderr, node.stderr

    async def test_two_nodes_talk_over_tcp_and_a_relaying_mitm_sees_only_ciphertext(
            self) -> None:
        marker = b"PLAINTEXT-MARKER"
        async with secured_over_tcp(self.make, mitm_marker=marker) as (mitm, alice, bob):
            assert mitm is not None
            assert (alice.remote_peer_id, bob.remote_peer_id) == (BOB.peer_id, ALICE.peer_id)
            for i in range(50):
                await alice.send(marker + b" %d" % i)
                assert await bob.recv() == marker + b" %d" % i
                await bob.send_many([marker * 100, marker])
                assert [await alice.recv(), await alice.recv()] == [marker * 100, marker]
            assert mitm.command("report") == "plaintext-seen 0"

    async def test_a_mitm_process_altering_bytes_is_detected_and_the_connection_closed(
            self) -> None:
        async with secured_over_tcp(self.make, mitm_marker=b"-") as (mitm, alice, bob):
            assert mitm is not None
            await alice.send(b"before")
            assert await bob.recv() == b"before"
            assert mitm.command("flip") == "armed"
            await alice.send(b"pay 10 to carol" * 10)
            with pytest.raises(ConnectionClosed, match="altered, replayed, reordered or dropped"):
                async with asyncio.timeout(TIMEOUT):
                    await bob.recv()
            assert mitm.wait_line() == "flipped"

    def _transcript(self) -> list[bytes]:
        # One genuine transcript per test class: hypothesis replays examples and needs the
        # strategy built from it to draw the same way each time (a fresh handshake's messages
        # differ in length, which it reports as FlakyStrategyDefinition).
        cls = type(self)
        if "_cached_transcript" not in cls.__dict__:
            cls._cached_transcript = asyncio.run(initiator_transcript(self.make))
        return cls._cached_transcript

    @settings(max_examples=100, parent=_FUZZ)
    @given(data=st.data(), hang_up=st.booleans())
    def test_random_and_mutated_handshake_messages_only_fail_the_handshake(
            self, data: st.DataObject, hang_up: bool) -> None:
        security = self.make()
        frames = data.draw(attacks(self._transcript()), label="frames")

        async def attack_then_serve() -> None:
            await attack_responder(security, frames, hang_up=hang_up, timeout=self.timeout)
            a, b = memory_pipe()
            alice, bob = await handshake(self.make, a, b)
            await alice.send(b"still serving")
            assert await bob.recv() == b"still serving"
            await alice.close()
            await bob.close()

        asyncio.run(attack_then_serve())

    @settings(max_examples=60, parent=_FUZZ)
    @given(data=st.data())
    def test_random_and_mutated_frames_never_get_through(self, data: st.DataObject) -> None:
        genuine = asyncio.run(sealed_frame(self.make, b"a genuine frame"))
        frames = data.draw(st.one_of(
            st.lists(st.binary(max_size=2048), max_size=4),
            st.lists(mutation_of(genuine), min_size=1, max_size=3),
        ), label="frames")
        assert asyncio.run(attack_secured(self.make, frames)) == []
