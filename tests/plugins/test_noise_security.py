"""noise-security: the SDK kit, interop with another Noise implementation, identity
binding, real TCP with a man in the middle, and fuzzing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from noise.connection import Keypair
from noise.connection import NoiseConnection as ReferenceNoise

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameSink,
    HandshakeError,
    Identity,
    ProtocolViolation,
    Security,
)
from p2phost_sdk.testing import memory_pipe
from p2phost_sdk.testing.security import SecurityConformance
from tests.discovery.plugins import use_plugin_source

from .security_support import ALICE, BOB, Gate, Recorder, SecurityOnTheWire

use_plugin_source("noise-security")

from p2phost_noise_security import NoiseSecurity  # noqa: E402
from p2phost_noise_security._connection import NoiseConnection  # noqa: E402
from p2phost_noise_security._noise import (  # noqa: E402
    PROTOCOL_NAME,
    HandshakeState,
    NoiseError,
    pack_nonce,
    public_bytes,
)
from p2phost_noise_security._security import PROLOGUE, SIGNATURE_PREFIX  # noqa: E402


@pytest.fixture(params=[16 * 1024 * 1024, 4096], ids=["16MiB", "4KiB"])
def max_frame_size(request: pytest.FixtureRequest) -> int:
    return int(request.param)


class TestNoiseConformance(SecurityConformance):
    @pytest.fixture
    def security_factory(self, max_frame_size: int) -> Callable[[], Security]:
        return lambda: NoiseSecurity(max_frame_size=max_frame_size)


# -- the Noise handshake itself ---------------------------------------------------------------

def _reference(initiator: bool, static: X25519PrivateKey) -> ReferenceNoise:
    noise = ReferenceNoise.from_name(PROTOCOL_NAME)
    noise.set_prologue(PROLOGUE)
    noise.set_keypair_from_private_bytes(
        Keypair.STATIC, static.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    if initiator:
        noise.set_as_initiator()
    else:
        noise.set_as_responder()
    noise.start_handshake()
    return noise


@pytest.mark.parametrize("we_initiate", [True, False])
def test_the_handshake_agrees_byte_for_byte_with_the_noiseprotocol_package(
        we_initiate: bool) -> None:
    ours_static, theirs_static = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ours = HandshakeState(initiator=we_initiate, static=ours_static, prologue=PROLOGUE)
    theirs = _reference(not we_initiate, theirs_static)
    payloads = [b"", b"second", b"third"]
    for step, payload in enumerate(payloads):
        if (step % 2 == 0) == we_initiate:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(theirs.write_message(payload)) == payload
    assert ours.finished and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == public_bytes(theirs_static)
    send, recv = ours.split()
    for n in range(3):
        assert theirs.decrypt(send.encrypt(pack_nonce(n), b"ours %d" % n, None)) == b"ours %d" % n
        assert recv.decrypt(pack_nonce(n), theirs.encrypt(b"theirs %d" % n), None) == (
            b"theirs %d" % n)


def test_a_low_order_ephemeral_key_is_refused() -> None:
    responder = HandshakeState(initiator=False, static=X25519PrivateKey.generate(),
                               prologue=PROLOGUE)
    responder.read_message(bytes(32))  # the all-zero point: every DH with it gives zeros
    with pytest.raises(NoiseError, match="invalid X25519 public key"):
        responder.write_message(b"")


def test_messages_out_of_turn_are_refused() -> None:
    initiator = HandshakeState(initiator=True, static=X25519PrivateKey.generate(),
                               prologue=PROLOGUE)
    with pytest.raises(NoiseError, match="out of turn"):
        initiator.read_message(bytes(32))
    with pytest.raises(NoiseError, match="before the handshake finished"):
        initiator.split()


# -- identity binding -------------------------------------------------------------------------

async def _impostor(connection: Connection, payload: Callable[[bytes], bytes]) -> None:
    """An initiator that runs real Noise but sends ``payload(its static key)`` as identity."""
    static = X25519PrivateKey.generate()
    state = HandshakeState(initiator=True, static=static, prologue=PROLOGUE)
    await connection.send(state.write_message(b""))
    state.read_message(await connection.recv())
    await connection.send(state.write_message(payload(public_bytes(static))))


@pytest.mark.parametrize("forgery", ["signed-by-the-impostor", "replayed-from-the-victim"])
async def test_a_node_presenting_another_nodes_peer_id_cannot_complete_the_handshake(
        forgery: str) -> None:
    victim, impostor = Identity.generate(), Identity.generate()
    victims_security = NoiseSecurity()

    def payload(impostor_static: bytes) -> bytes:
        if forgery == "signed-by-the-impostor":
            return victim.public_key + impostor.sign(SIGNATURE_PREFIX + impostor_static)
        # The victim's genuine payload, as every peer it ever talked to has seen it.
        return victims_security._payload(victim)

    a, b = memory_pipe()
    impostor_task = asyncio.create_task(_impostor(a, payload))
    with pytest.raises(HandshakeError, match=f"claims peer id {victim.peer_id}"):
        await NoiseSecurity().secure(b, identity=BOB, initiator=False,
                                     expected_peer_id=None, timeout=5)
    await impostor_task
    await a.close()


async def test_the_impostor_harness_passes_with_its_own_identity() -> None:
    impostor = Identity.generate()  # the control: same harness, honest payload
    a, b = memory_pipe()
    impostor_task = asyncio.create_task(_impostor(
        a, lambda static: impostor.public_key + impostor.sign(SIGNATURE_PREFIX + static)))
    secured = await NoiseSecurity().secure(b, identity=BOB, initiator=False,
                                           expected_peer_id=None, timeout=5)
    assert secured.remote_peer_id == impostor.peer_id
    await impostor_task
    await secured.close()


async def test_an_initiator_refusing_the_responder_never_reveals_its_identity() -> None:
    a, b = memory_pipe()
    recorder = Recorder(a)
    outcomes = await asyncio.gather(
        NoiseSecurity().secure(recorder, identity=ALICE, initiator=True,
                               expected_peer_id=Identity.generate().peer_id, timeout=5),
        NoiseSecurity().secure(b, identity=BOB, initiator=False, expected_peer_id=None,
                               timeout=5),
        return_exceptions=True)
    assert all(isinstance(o, HandshakeError) for o in outcomes), outcomes
    assert [len(frame) for frame in recorder.sent] == [32], "only the ephemeral key went out"


# -- over real TCP through a man-in-the-middle process, and fuzzing ----------------------------

def _noise() -> Security:
    return NoiseSecurity()


class TestNoiseOnTheWire(SecurityOnTheWire):
    make = staticmethod(_noise)
    plugin = "noise-security"


async def _gated() -> tuple[Gate, Connection, Connection]:
    """Alice and Bob over noise, Alice's raw connection behind a (closed) Gate."""
    a, b = memory_pipe()
    gate = Gate(a)
    alice, bob = await asyncio.gather(
        NoiseSecurity().secure(gate, identity=ALICE, initiator=True, expected_peer_id=None,
                               timeout=5),
        NoiseSecurity().secure(b, identity=BOB, initiator=False, expected_peer_id=None,
                               timeout=5))
    return gate, alice, bob


async def test_a_lone_frame_goes_out_at_once_and_a_refused_one_costs_no_nonce() -> None:
    gate, alice, bob = await _gated()
    assert not alice.try_send(b"refused")  # the transport would have to wait
    await alice.send(b"sent")  # under the nonce the refused frame did not use
    assert await asyncio.wait_for(bob.recv(), 5) == b"sent"
    gate.open = True
    assert alice.try_send(b"at once")
    await alice.send(b"after it")
    assert [await asyncio.wait_for(bob.recv(), 5) for _ in range(2)] == [b"at once",
                                                                          b"after it"]
    await alice.close()
    await bob.close()


async def test_a_run_of_frames_goes_at_once_in_one_message_and_a_refused_one_costs_no_nonce(
) -> None:
    gate, alice, bob = await _gated()
    run_ = [b"one", b"two", b"three"]
    assert not alice.try_send_many(run_)  # the transport would have to wait
    await alice.send(b"sent")  # under the nonce the refused run did not use
    assert await asyncio.wait_for(bob.recv(), 5) == b"sent"
    gate.open = True
    assert not alice.try_send_many([b"x" * 40_000, b"y" * 40_000])  # more than a message
    assert alice.try_send_many([])  # nothing to hand over: done
    assert alice.try_send_many(run_)
    assert len(gate.inner._outbound.frames) == 1  # type: ignore[attr-defined]  # one message
    await alice.send(b"after it")
    assert [await asyncio.wait_for(bob.recv(), 5) for _ in range(4)] == [*run_, b"after it"]
    await alice.close()
    await bob.close()


async def test_a_message_over_the_noise_maximum_is_refused_undecrypted() -> None:
    """On a medium that does not cap frames at the raw connection (a broker's), a peer
    past the handshake may still send a raw frame over 65535 bytes: refused, not
    decrypted (Noise allows no such message)."""
    from p2phost_noise_security._noise import MAX_MESSAGE, pack_nonce

    a, b = memory_pipe()
    alice, bob = await asyncio.gather(
        NoiseSecurity().secure(a, identity=ALICE, initiator=True, expected_peer_id=None,
                               timeout=5),
        NoiseSecurity().secure(b, identity=BOB, initiator=False, expected_peer_id=None,
                               timeout=5))
    # Sealed properly, under the right nonce: only its size is wrong.
    plaintext = (MAX_MESSAGE + 1).to_bytes(4, "big") + b"x" * (MAX_MESSAGE + 1)
    await a.send(alice._encrypt(pack_nonce(0), plaintext, None))  # type: ignore[attr-defined]
    with pytest.raises(ConnectionClosed, match="over the Noise maximum of 65535"):
        await asyncio.wait_for(bob.recv(), 5)
    await alice.close()
    await bob.close()


class _Pushing(Connection):
    """An inner connection in push mode: the test hands its reads to ``sink``; what is
    sent on it is kept in ``sent``."""

    def __init__(self) -> None:
        self.sink: FrameSink | None = None
        self.sent: list[bytes] = []
        self.paused = False

    def push(self, sink: FrameSink) -> bool:
        self.sink = sink
        return True

    def pause_reading(self) -> None:
        self.paused = True

    async def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def send_many(self, frames: list[bytes]) -> None:
        self.sent.extend(frames)

    async def recv(self) -> bytes:
        raise AssertionError("push mode only")

    async def close(self) -> None:
        pass


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended: Exception | None = None

    def frames_received(self, frames: list[bytes]) -> None:
        self.frames.extend(frames)

    def connection_ended(self, error: Exception) -> None:
        self.ended = error


def _pushed_pair(sender_max: int = 1 << 20, receiver_max: int = 1 << 20
                 ) -> tuple[NoiseConnection, _Pushing, NoiseConnection, _Pushing, _Sink]:
    key = b"k" * 32
    out, into = _Pushing(), _Pushing()
    sender = NoiseConnection(out, send_cipher=ChaCha20Poly1305(key),
                             recv_cipher=ChaCha20Poly1305(key), remote_peer_id="b",
                             max_frame_size=sender_max)
    receiver = NoiseConnection(into, send_cipher=ChaCha20Poly1305(key),
                               recv_cipher=ChaCha20Poly1305(key), remote_peer_id="a",
                               max_frame_size=receiver_max)
    sink = _Sink()
    assert receiver.push(sink)
    return sender, out, receiver, into, sink


async def test_push_mode_opens_lone_frames_bursts_and_large_frames_in_order() -> None:
    sender, out, _, into, sink = _pushed_pair()
    await sender.send(b"lone")
    await sender.send_many([b"one", b"two", b"three"])  # one message, three records
    large = bytes(range(256)) * 1000  # spans several messages
    await sender.send(large)
    await sender.send(b"after")
    assert into.sink is not None
    for message in out.sent:  # each read one message, as tcp hands a lone frame
        into.sink.frames_received([message])
    assert sink.frames == [b"lone", b"one", b"two", b"three", large, b"after"]
    assert sink.ended is None


async def test_push_mode_closes_on_an_altered_message_and_takes_nothing_after_it() -> None:
    sender, out, _, into, sink = _pushed_pair()
    for body in (b"first", b"second", b"third"):
        await sender.send(body)
    altered = bytearray(out.sent[1])
    altered[-1] ^= 1
    assert into.sink is not None
    into.sink.frames_received([out.sent[0]])
    into.sink.frames_received([bytes(altered)])
    into.sink.frames_received([out.sent[2]])  # under the next nonce, yet refused
    assert sink.frames == [b"first"]
    assert isinstance(sink.ended, ConnectionClosed)
    assert "failed authentication" in str(sink.ended) and into.paused


async def test_push_mode_refuses_a_replayed_message() -> None:
    sender, out, _, into, sink = _pushed_pair()
    await sender.send(b"once")
    assert into.sink is not None
    into.sink.frames_received([out.sent[0]])
    into.sink.frames_received([out.sent[0]])
    assert sink.frames == [b"once"]
    assert isinstance(sink.ended, ConnectionClosed)


@pytest.mark.parametrize(("sender_max", "receiver_max"),
                         [(1 << 20, 1 << 20), (1024, 4096), (4096, 4096), (1 << 20, 4096)])
async def test_a_largest_frame_in_the_most_pieces_a_sender_makes_is_taken(
        sender_max: int, receiver_max: int) -> None:
    """The bound on pieces refuses no frame a sender makes: the largest one, starting
    with a 1-byte piece at the end of a message, whatever the two maximums."""
    sender, out, receiver, into, sink = _pushed_pair(sender_max, receiver_max)
    before = b"a" * (sender._room - 2 * 4 - 1)  # leaves room for a header and one byte
    largest = bytes(range(256)) * (min(sender_max, receiver_max) // 256)
    await sender.send_many([before, largest])
    assert into.sink is not None
    for message in out.sent:
        into.sink.frames_received([message])
    assert sink.ended is None
    assert sink.frames == [before, largest]
    assert len(out.sent) >= receiver._most_pieces - 2  # the bound has little slack


@pytest.mark.parametrize(("record", "problem"), [
    (b"\x80\x00\x00\x00", "an empty piece of a frame"),  # length 0, more follows
    (b"\x80\x00\x00\x01x", "a frame of the maximum size"),  # 1 byte, more follows
])
async def test_records_of_tiny_pieces_close_the_connection_holding_few_pieces(
        record: bytes, problem: str) -> None:
    """Each piece of an unfinished frame is kept: a peer sending pieces that carry
    nothing (or one byte) made the receiver keep millions of them."""
    _, _, receiver, into, sink = _pushed_pair()
    assert into.sink is not None
    most = 0
    for _ in range(10):  # each message 13,000 records or more
        into.sink.frames_received([receiver._encrypt(  # (one key each way: see _pushed_pair)
            pack_nonce(receiver._send_nonce), record * (65519 // len(record)), None)])
        receiver._send_nonce += 1
        most = max(most, len(receiver._pieces))
    assert isinstance(sink.ended, ProtocolViolation)
    assert problem in str(sink.ended) and into.paused
    assert most <= receiver._most_pieces == 3 + (1 << 20) // 65515
