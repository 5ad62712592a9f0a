"""The security conformance kit fails a channel security that protects nothing.

A plugin that only announces peer ids in the clear and passes frames through untouched
must fail the kit's tampering tests, and one that ignores ``expected_peer_id`` its
refusal tests: a kit that passed them would prove nothing about real plugins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from p2phost_sdk import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    HandshakeError,
    Identity,
    SecureConnection,
    Security,
)
from p2phost_sdk.testing import memory_pipe
from p2phost_sdk.testing.security import TAMPERING, SecurityConformance, SecurityKit


class _Passthrough(SecureConnection):
    def __init__(self, inner: Connection, peer_id: str) -> None:
        self._inner = inner
        self.remote_peer_id = peer_id

    async def send(self, frame: bytes) -> None:
        await self._inner.send(frame)

    async def recv(self) -> bytes:
        return await self._inner.recv()

    async def close(self) -> None:
        await self._inner.close()


class _PlainSecurity(Security):
    """Announces peer ids in the clear; proves and protects nothing."""

    protocol = "plain"

    def __init__(self, *, check_expected: bool = True) -> None:
        self.check_expected = check_expected

    async def secure(self, connection: Connection, *, identity: Identity, initiator: bool,
                     expected_peer_id: str | None, timeout: float) -> SecureConnection:
        await connection.send(identity.peer_id.encode())
        peer_id = (await connection.recv()).decode()
        if self.check_expected and expected_peer_id not in (None, peer_id):
            await connection.close()
            raise HandshakeError(f"expected {expected_peer_id}, got {peer_id}")
        return _Passthrough(connection, peer_id)


async def _kit_fails(test: Awaitable[None]) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        await test


async def test_the_plain_security_passes_the_round_trip_tests_it_should() -> None:
    kit, conformance = SecurityKit(_PlainSecurity), SecurityConformance()
    await conformance.test_each_side_learns_the_other_proven_peer_id(kit)
    await conformance.test_the_initiator_refuses_a_responder_that_is_not_the_expected_peer(kit)


@pytest.mark.parametrize("action", TAMPERING)
async def test_the_kit_catches_frames_tampered_in_flight_that_get_through(action: str) -> None:
    kit = SecurityKit(_PlainSecurity)
    await _kit_fails(SecurityConformance().test_a_frame_tampered_in_flight_closes_the_connection(
        kit, "a->b", action))


async def test_the_kit_catches_an_ignored_expected_peer_id() -> None:
    kit, conformance = SecurityKit(lambda: _PlainSecurity(check_expected=False)), \
        SecurityConformance()
    await _kit_fails(
        conformance.test_the_initiator_refuses_a_responder_that_is_not_the_expected_peer(kit))
    await _kit_fails(
        conformance.test_the_responder_refuses_an_initiator_that_is_not_the_expected_peer(kit))


async def test_memory_pipe_moves_frames_in_order_and_reports_the_close() -> None:
    a, b = memory_pipe(max_frame_size=8)
    await a.send_many([b"1", b"22", b""])
    await a.send(bytearray(b"4444"))
    with pytest.raises(FrameTooLarge):
        await a.send(bytes(9))
    await a.close()
    assert [await b.recv() for _ in range(4)] == [b"1", b"22", b"", b"4444"]
    with pytest.raises(ConnectionClosed):
        await b.recv()
    with pytest.raises(ConnectionClosed):
        await b.send(b"x")


async def test_memory_pipe_slows_a_sender_while_the_reader_is_behind() -> None:
    a, b = memory_pipe(capacity=1)
    await a.send(b"first")
    second = asyncio.create_task(a.send(b"second"))
    await asyncio.sleep(0.05)
    assert not second.done(), "the sender went on past the capacity"
    assert await b.recv() == b"first"
    async with asyncio.timeout(5):
        await second
    assert await b.recv() == b"second"
