"""The security conformance kit: peer ids are proven, and tampering is detected.

Give the kit a ``security_factory`` fixture (a callable making a new
:class:`~p2phost_sdk.Security` each call, or one instance to use for every side) and
subclass :class:`SecurityConformance` (it also works under ``pytest_plugins``, as every
kit)::

    import pytest
    from p2phost_sdk.testing.security import SecurityConformance

    class TestMySecurity(SecurityConformance):
        @pytest.fixture
        def security_factory(self):
            return lambda: MySecurity(max_frame_size=1024 * 1024)

Every test runs two identities over an in-memory pipe, most of them through an on-path
attacker (:class:`Relay`) that forwards frames and, when told, flips a byte, replays,
drops or reorders one. The kit checks that each side learns the other's proven peer id,
that a wrong expected peer id is refused, that frames of every size up to the plugin's
``max_frame_size`` round-trip whole and in order, and that a silent peer, a peer that
hangs up, garbage, and any frame altered, replayed, dropped or reordered in flight end
the handshake with ``HandshakeError`` or the connection with ``ConnectionClosed``, in
bounded time (a frame tampered with in flight: ``ProtocolViolation``, which the host logs
as a warning).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from .._errors import ConnectionClosed, FrameTooLarge, HandshakeError, ProtocolViolation
from .._identity import Identity
from .._security import SecureConnection, Security
from .._transport import Connection
from ._memory import memory_pipe
from ._relay import TAMPERING, Relay

__all__ = ["TAMPERING", "Relay", "SecurityConformance", "SecurityKit", "assert_refused"]

#: Seconds any one step of a kit test may take.
_TIMEOUT = 10.0
#: The handshake timeout where the kit waits for a plugin to give up.
_SHORT = 1.0
Outcome = SecureConnection | BaseException


class SecurityKit:
    """Helpers the kit's tests share: two identities, handshakes, secured pairs."""

    def __init__(self, factory: Callable[[], Security] | Security) -> None:
        self._factory = factory
        self.alice = Identity.generate()
        self.bob = Identity.generate()

    def make(self) -> Security:
        """A Security from the plugin's factory."""
        if isinstance(self._factory, Security):
            return self._factory
        security = self._factory()
        assert isinstance(security, Security), f"security_factory made {security!r}"
        return security

    @property
    def max_frame_size(self) -> int:
        """The largest frame the plugin's secured connections carry."""
        return self.make().max_frame_size

    async def handshake(
        self, initiator: Connection, responder: Connection, *,
        expect_bob: str | None = None, expect_alice: str | None = None,
        timeout: float = _TIMEOUT,
    ) -> tuple[Outcome, Outcome]:
        """Alice dials Bob; each side's secured connection, or what it raised."""
        async with asyncio.timeout(timeout + _TIMEOUT):
            alice, bob = await asyncio.gather(
                self.make().secure(initiator, identity=self.alice, initiator=True,
                                   expected_peer_id=expect_bob, timeout=timeout),
                self.make().secure(responder, identity=self.bob, initiator=False,
                                   expected_peer_id=expect_alice, timeout=timeout),
                return_exceptions=True,
            )
        return alice, bob

    @asynccontextmanager
    async def secured(self, relay: Relay | None = None) -> AsyncIterator[
            tuple[SecureConnection, SecureConnection]]:
        """Alice's and Bob's secured connections, directly or through ``relay``."""
        initiator, responder = (relay.a, relay.b) if relay else memory_pipe(
            max_frame_size=self.max_frame_size)
        alice, bob = await self.handshake(initiator, responder, expect_bob=self.bob.peer_id,
                                          expect_alice=self.alice.peer_id)
        for outcome in (alice, bob):
            if isinstance(outcome, BaseException):
                raise AssertionError(f"the handshake failed: {outcome!r}") from outcome
        assert isinstance(alice, SecureConnection) and isinstance(bob, SecureConnection)
        try:
            yield alice, bob
        finally:
            await alice.close()
            await bob.close()


async def assert_refused(outcome: Outcome) -> None:
    """``outcome`` is a HandshakeError, or a connection dead at its first ``recv``.

    The side that sends the last handshake message may finish before the other side
    refuses it; it must then learn of the refusal as a closed connection.
    """
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, HandshakeError):
            raise AssertionError(f"expected HandshakeError, got {outcome!r}") from outcome
        return
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(_TIMEOUT):
            frame = await outcome.recv()
            raise AssertionError(f"a refused handshake delivered a frame: {frame[:40]!r}")
    await outcome.close()


def _frames(count: int, limit: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [min(s, limit - 4) for s in (0, 1, 4, 63, 64, 1024, 16_384, 65_535, 70_000)]
    return [rng.randbytes(rng.choice(sizes)) + i.to_bytes(4, "big") for i in range(count)]


class SecurityConformance:
    """The conformance tests every channel security must pass. Needs ``security_factory``."""

    pytestmark = [pytest.mark.asyncio]

    @pytest.fixture
    def security_kit(self, security_factory: Any) -> SecurityKit:
        """The kit's helpers over the plugin's ``security_factory``."""
        return SecurityKit(security_factory)

    async def test_each_side_learns_the_other_proven_peer_id(self, security_kit: SecurityKit
                                                            ) -> None:
        alice, bob = await security_kit.handshake(*memory_pipe())
        assert isinstance(alice, SecureConnection), alice
        assert isinstance(bob, SecureConnection), bob
        assert alice.remote_peer_id == security_kit.bob.peer_id
        assert bob.remote_peer_id == security_kit.alice.peer_id
        await alice.close()
        await bob.close()

    async def test_frames_round_trip_whole_and_in_order_both_ways(
            self, security_kit: SecurityKit) -> None:
        frames = _frames(60, security_kit.max_frame_size)
        relay = Relay(security_kit.max_frame_size)
        async with relay.running(), security_kit.secured(relay) as (alice, bob):
            async def talk(me: SecureConnection) -> list[bytes]:
                for frame in frames[:20]:
                    await me.send(frame)
                await me.send_many(frames[20:])
                return [await me.recv() for _ in frames]

            async with asyncio.timeout(_TIMEOUT):
                heard_by_alice, heard_by_bob = await asyncio.gather(talk(alice), talk(bob))
        assert heard_by_alice == frames
        assert heard_by_bob == frames

    async def test_large_frames_round_trip(self, security_kit: SecurityKit) -> None:
        limit = security_kit.max_frame_size
        sizes = sorted({s for s in (65_519, 65_520, 65_536, 1 << 20, limit - 1, limit)
                        if s <= limit})
        async with security_kit.secured() as (alice, bob):
            for size in sizes:
                frame = random.Random(size).randbytes(size)
                async with asyncio.timeout(_TIMEOUT):
                    await alice.send(frame)
                    assert await bob.recv() == frame, f"a frame of {size} bytes changed"
                    await bob.send_many([frame, b"after"])
                    assert await alice.recv() == frame
                    assert await alice.recv() == b"after"

    async def test_an_oversized_frame_is_refused_and_the_connection_stays_usable(
            self, security_kit: SecurityKit) -> None:
        async with security_kit.secured() as (alice, bob):
            with pytest.raises(FrameTooLarge):
                await alice.send(bytes(security_kit.max_frame_size + 1))
            with pytest.raises(FrameTooLarge):
                await alice.send_many([b"fine", bytes(security_kit.max_frame_size + 1)])
            async with asyncio.timeout(_TIMEOUT):
                await alice.send(b"still here")
                assert await bob.recv() == b"still here"

    async def test_concurrent_senders_keep_every_frame_whole(self, security_kit: SecurityKit
                                                             ) -> None:
        limit = security_kit.max_frame_size - 2
        async with security_kit.secured() as (alice, bob):
            async def sender(tag: int) -> None:
                for i in range(40):
                    size = min(limit, 1 + 997 * i)
                    await alice.send(bytes([tag]) * size + i.to_bytes(2, "big"))

            async with asyncio.timeout(_TIMEOUT):
                senders = asyncio.gather(*(sender(tag) for tag in range(4)))
                received = [await bob.recv() for _ in range(160)]
                await senders
        for tag in range(4):
            mine = [f for f in received if f[0] == tag]
            assert [int.from_bytes(f[-2:], "big") for f in mine] == list(range(40))
            assert all(f[:-2] == bytes([tag]) * len(f[:-2]) for f in mine)

    async def test_expected_peer_ids_are_accepted(self, security_kit: SecurityKit) -> None:
        async with security_kit.secured() as (alice, bob):
            assert (alice.remote_peer_id, bob.remote_peer_id) == (
                security_kit.bob.peer_id, security_kit.alice.peer_id)

    async def test_the_initiator_refuses_a_responder_that_is_not_the_expected_peer(
            self, security_kit: SecurityKit) -> None:
        someone_else = Identity.generate().peer_id
        alice, bob = await security_kit.handshake(*memory_pipe(), expect_bob=someone_else)
        assert isinstance(alice, HandshakeError), f"the initiator accepted {alice!r}"
        await assert_refused(bob)

    async def test_the_responder_refuses_an_initiator_that_is_not_the_expected_peer(
            self, security_kit: SecurityKit) -> None:
        someone_else = Identity.generate().peer_id
        alice, bob = await security_kit.handshake(*memory_pipe(), expect_alice=someone_else)
        assert isinstance(bob, HandshakeError), f"the responder accepted {bob!r}"
        await assert_refused(alice)

    @pytest.mark.parametrize("direction, skip", [("a->b", 0), ("b->a", 0), ("a->b", 1)])
    async def test_an_altered_handshake_message_fails_the_handshake(
            self, security_kit: SecurityKit, direction: str, skip: int) -> None:
        relay = Relay(security_kit.max_frame_size)
        for _ in range(skip):
            relay.tamper(direction, "pass")
        relay.tamper(direction, "flip")
        async with relay.running():
            alice, bob = await security_kit.handshake(relay.a, relay.b, timeout=_SHORT * 5)
            await assert_refused(alice)
            await assert_refused(bob)

    @pytest.mark.parametrize("action", TAMPERING)
    @pytest.mark.parametrize("direction", ["a->b", "b->a"])
    async def test_a_frame_tampered_in_flight_closes_the_connection(
            self, security_kit: SecurityKit, direction: str, action: str) -> None:
        relay = Relay(security_kit.max_frame_size)
        frames = [b"pay 10 to carol", b"pay 20 to dave", b"pay 30 to erin"]
        async with relay.running(), security_kit.secured(relay) as (alice, bob):
            sender, receiver = (alice, bob) if direction == "a->b" else (bob, alice)
            relay.tamper(direction, action)
            for frame in frames:  # one at a time: one frame (or more) each on the medium
                await sender.send(frame)
            received: list[bytes] = []
            try:
                async with asyncio.timeout(_TIMEOUT):
                    while True:
                        received.append(await receiver.recv())
                        assert received == frames[: len(received)], (
                            f"a tampered frame was delivered: {received!r}")
            except ConnectionClosed as exc:
                # Tampering is a peer's (or an attacker's) doing, not a connection that
                # ended: the host logs a ProtocolViolation as a warning, with its cause.
                assert isinstance(exc, ProtocolViolation), (
                    f"{action} must raise ProtocolViolation, not {exc!r}")
            except TimeoutError:
                raise AssertionError(
                    f"{action} went unnoticed: {received!r} delivered and no close") from None
            with pytest.raises(ConnectionClosed):  # and the connection stays dead
                async with asyncio.timeout(_TIMEOUT):
                    await receiver.recv()

    @pytest.mark.parametrize("initiator", [True, False])
    async def test_a_silent_peer_is_a_handshake_error_after_the_timeout(
            self, security_kit: SecurityKit, initiator: bool) -> None:
        mine, silent = memory_pipe()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HandshakeError):
            async with asyncio.timeout(_TIMEOUT):
                await security_kit.make().secure(
                    mine, identity=security_kit.alice, initiator=initiator,
                    expected_peer_id=None, timeout=_SHORT / 2)
        assert loop.time() - started < _SHORT / 2 + 2.0, "the handshake outlived its timeout"
        await _assert_closed(silent)

    @pytest.mark.parametrize("initiator", [True, False])
    async def test_a_peer_that_hangs_up_mid_handshake_is_a_handshake_error(
            self, security_kit: SecurityKit, initiator: bool) -> None:
        mine, theirs = memory_pipe()
        if initiator:
            await theirs.close()
        else:
            await theirs.send(b"\x16\x03\x01" + bytes(29))
            await theirs.close()
        with pytest.raises(HandshakeError):
            async with asyncio.timeout(_SHORT * 2):  # well before the handshake timeout
                await security_kit.make().secure(
                    mine, identity=security_kit.alice, initiator=initiator,
                    expected_peer_id=None, timeout=_TIMEOUT)

    @pytest.mark.parametrize("initiator", [True, False])
    @pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 96, 1200, 65_535])
    async def test_garbage_handshake_messages_are_refused_without_hanging(
            self, security_kit: SecurityKit, initiator: bool, size: int) -> None:
        mine, attacker = memory_pipe()
        rng = random.Random(size)
        for _ in range(3):
            await attacker.send(rng.randbytes(size))
        with pytest.raises(HandshakeError):
            async with asyncio.timeout(_TIMEOUT):
                await security_kit.make().secure(
                    mine, identity=security_kit.alice, initiator=initiator,
                    expected_peer_id=None, timeout=_SHORT)
        await _assert_closed(attacker)

    async def test_one_security_serves_many_handshakes_at_once(self, security_kit: SecurityKit
                                                               ) -> None:
        security = security_kit.make()
        pipes = [memory_pipe() for _ in range(8)]
        others = [Identity.generate() for _ in pipes]
        async with asyncio.timeout(_TIMEOUT):
            secured = await asyncio.gather(*(
                security.secure(end, identity=identity, initiator=initiator,
                                expected_peer_id=None, timeout=_TIMEOUT)
                for (a, b), other in zip(pipes, others, strict=True)
                for end, identity, initiator in ((a, security_kit.alice, True),
                                                 (b, other, False))
            ))
        for i, other in enumerate(others):
            alice, peer = secured[2 * i], secured[2 * i + 1]
            assert alice.remote_peer_id == other.peer_id
            assert peer.remote_peer_id == security_kit.alice.peer_id
            await alice.send(b"hi %d" % i)
            assert await peer.recv() == b"hi %d" % i
            await alice.close()
            await peer.close()

    async def test_a_close_is_seen_by_the_other_side(self, security_kit: SecurityKit) -> None:
        async with security_kit.secured() as (alice, bob):
            await alice.send(b"last words")
            await alice.close()
            async with asyncio.timeout(_TIMEOUT):
                assert await bob.recv() == b"last words"
                with pytest.raises(ConnectionClosed):
                    await bob.recv()
            with pytest.raises(ConnectionClosed):
                await alice.send(b"after close")


async def _assert_closed(end: Connection) -> None:
    """The other end of a failed handshake was closed (its recv ends, after any frames)."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(_TIMEOUT):
            while True:
                await end.recv()
