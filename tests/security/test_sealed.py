"""Sealed frames (message-level security on inbox media): unit tests and fuzzing."""

from __future__ import annotations

import hashlib
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from p2phost._runtime.wire._sealed import (
    HEADER,
    OVERHEAD,
    ReplayGuard,
    Sealer,
    SealError,
    x25519_private_of,
    x25519_public_of,
)
from p2phost_sdk import Identity

ALICE, BOB, EVE = Identity.generate(), Identity.generate(), Identity.generate()


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), hashlib.sha256(b"x").digest()])
def test_the_x25519_key_of_an_identity_matches_its_converted_public_key(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    assert x25519_public_of(identity.public_key) == _raw_public(x25519_private_of(identity))


def _pair() -> tuple[Sealer, Sealer]:
    return Sealer(ALICE, replay_window=60), Sealer(BOB, replay_window=60)


def _seal(sealer: Sealer, frame: bytes, to: Identity, counter: int = 0,
          session: tuple[bytes, bytes, object] | None = None) -> bytes:
    s, recipient, cipher = session or sealer.session_to(to.peer_id)
    return sealer.seal(frame, s, recipient, cipher, counter)  # type: ignore[arg-type]


def test_a_sealed_frame_opens_only_for_its_recipient_from_its_sender() -> None:
    alice, bob = _pair()
    sealed = _seal(alice, b"secret frame", BOB)
    assert b"secret frame" not in sealed and len(sealed) == len(b"secret frame") + OVERHEAD
    assert bob.open(sealed, ALICE.peer_id) == b"secret frame"
    with pytest.raises(SealError, match="fails authentication"):
        Sealer(EVE, replay_window=60).open(sealed, ALICE.peer_id)  # not encrypted to eve
    with pytest.raises(SealError, match=r"fails authentication|not signed by"):
        _pair()[1].open(sealed, EVE.peer_id)  # claimed by another sender


def test_every_altered_byte_is_refused() -> None:
    alice, bob = _pair()
    sealed = _seal(alice, b"pay 10 to carol", BOB)
    for i in range(len(sealed)):
        altered = bytearray(sealed)
        altered[i] ^= 0x40
        with pytest.raises(SealError):
            bob.open(bytes(altered), ALICE.peer_id)


def test_a_frame_signed_by_someone_else_inside_valid_encryption_is_refused() -> None:
    eve = Sealer(EVE, replay_window=60)
    forged = _seal(eve, b"from alice, honest", BOB)  # eve encrypts to bob, claims alice
    with pytest.raises(SealError):
        Sealer(BOB, replay_window=60).open(forged, ALICE.peer_id)


def test_replays_within_the_window_and_stale_or_future_frames_are_refused() -> None:
    alice, bob = _pair()
    session = alice.session_to(BOB.peer_id)
    frames = [_seal(alice, b"%d" % n, BOB, n, session) for n in range(3)]
    assert bob.open(frames[0], ALICE.peer_id) == b"0"
    assert bob.open(frames[2], ALICE.peer_id) == b"2"
    assert bob.open(frames[1], ALICE.peer_id) == b"1"  # late, but not seen before
    for frame in frames:
        with pytest.raises(SealError, match="replayed"):
            bob.open(frame, ALICE.peer_id)
    guard = ReplayGuard(window=60)
    now = time.time()
    assert "replay window" in (guard.admit("a", b"s", 0, now - 61, now) or "")
    assert "in the future" in (guard.admit("a", b"s", 0, now + 600, now) or "")
    assert guard.admit("a", b"s", 0, now, now) is None
    assert "replayed" in (guard.admit("a", b"s", 0, now, now) or "")
    # A frame far behind the newest of its session can no longer be told apart: refused.
    assert guard.admit("a", b"s", 5000, now, now) is None
    assert "replayed" in (guard.admit("a", b"s", 1, now, now) or "")
    # An idle session is forgotten once the window passed; its frames are stale by then.
    assert guard.admit("b", b"t", 0, now + 61, now + 61) is None
    assert ("a", b"s") not in guard.sessions


def test_a_plaintext_envelope_is_named_as_such() -> None:
    with pytest.raises(SealError, match="plaintext envelope"):
        _pair()[1].open(b"\x01" + bytes(200), ALICE.peer_id)


def _mutate(data: st.DataObject, frame: bytes) -> bytes:
    out = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        out[data.draw(st.integers(0, len(out) - 1))] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        del out[data.draw(st.integers(0, len(out))):]
    return bytes(out)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_random_and_mutated_sealed_frames_only_raise_seal_error(data: st.DataObject) -> None:
    alice, bob = _pair()
    genuine = _seal(alice, data.draw(st.binary(max_size=64)), BOB)
    attack = data.draw(st.one_of(
        st.binary(max_size=300),
        st.binary(min_size=HEADER.size, max_size=300).map(lambda b: b"\x81" + b[1:]),
        st.just(genuine).map(lambda g: _mutate(data, g)),
    ))
    if attack == genuine:
        return
    with pytest.raises(SealError):
        bob.open(attack, ALICE.peer_id)
