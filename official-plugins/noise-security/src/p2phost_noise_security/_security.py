"""Noise XX with the node's Ed25519 identity bound into the handshake.

Noise authenticates X25519 static keys, not p2phost peer ids. As libp2p-noise does, each
side sends in its (encrypted) handshake payload its Ed25519 public key and a signature,
by that key, over its Noise static public key. The handshake proves the peer holds the
static key; the signature proves the identity vouches for that static key; together they
prove the peer id. The initiator checks the responder before it reveals its own identity.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2phost_sdk import (
    Connection,
    HandshakeError,
    Identity,
    SecureConnection,
    Security,
    peer_id_from_public_key,
    run_handshake,
    verify,
)

from ._connection import NoiseConnection
from ._noise import MAX_MESSAGE, HandshakeState, NoiseError, public_bytes

#: Mixed into the handshake hash, so that only p2phost noise peers agree on keys.
PROLOGUE = b"p2phost-noise/1"
#: What an identity signs: this prefix and the Noise static public key.
SIGNATURE_PREFIX = b"p2phost-noise-static-key:"
#: The identity payload: a 32-byte Ed25519 public key and a 64-byte signature.
PAYLOAD_SIZE = 96


class NoiseSecurity(Security):
    """``noise``: ``Noise_XX_25519_ChaChaPoly_SHA256`` proving each side's peer id."""

    protocol = "noise"
    #: A Noise message is at most 65535 bytes, so no handshake frame is larger.
    max_handshake_frame = MAX_MESSAGE
    #: Each frame on the raw connection is one Noise message, so none is larger after it.
    max_transport_frame = MAX_MESSAGE

    def __init__(self, *, max_frame_size: int = 16 * 1024 * 1024) -> None:
        if max_frame_size < 1024:
            raise ValueError(f"max_frame_size must be at least 1024 bytes, not {max_frame_size}")
        self.max_frame_size = max_frame_size
        # One static key per instance: the identity signature is made once, not per
        # handshake, and the key never leaves this process.
        self._static = X25519PrivateKey.generate()
        self._payloads: dict[bytes, bytes] = {}

    def _payload(self, identity: Identity) -> bytes:
        key = identity.public_key
        payload = self._payloads.get(key)
        if payload is None:
            signature = identity.sign(SIGNATURE_PREFIX + public_bytes(self._static))
            payload = self._payloads[key] = key + signature
        return payload

    async def secure(
        self,
        connection: Connection,
        *,
        identity: Identity,
        initiator: bool,
        expected_peer_id: str | None,
        timeout: float,
    ) -> SecureConnection:
        """Run the Noise XX handshake; the result's ``remote_peer_id`` is proven."""
        return await run_handshake(
            connection,
            self._handshake(connection, identity, initiator, expected_peer_id),
            protocol="noise", timeout=timeout,
        )

    async def _handshake(
        self, connection: Connection, identity: Identity, initiator: bool,
        expected_peer_id: str | None,
    ) -> NoiseConnection:
        state = HandshakeState(initiator=initiator, static=self._static, prologue=PROLOGUE)
        payload = self._payload(identity)
        where = connection.remote_address or "the peer"
        try:
            if initiator:
                await connection.send(state.write_message(b""))
                answer = state.read_message(await connection.recv())
                peer_id = _prove(state, answer, expected_peer_id, where)
                await connection.send(state.write_message(payload))
            else:
                if state.read_message(await connection.recv()):
                    raise NoiseError("the first handshake message carries a payload")
                await connection.send(state.write_message(payload))
                peer_id = _prove(state, state.read_message(await connection.recv()),
                                 expected_peer_id, where)
        except NoiseError as exc:
            raise HandshakeError(
                f"noise handshake with {where} failed: {exc} (is the peer a p2phost node "
                "using noise-security?)"
            ) from None
        send_cipher, recv_cipher = state.split()
        return NoiseConnection(
            connection, send_cipher=send_cipher, recv_cipher=recv_cipher,
            remote_peer_id=peer_id, max_frame_size=self.max_frame_size,
        )


def _prove(state: HandshakeState, payload: bytes, expected: str | None, where: str) -> str:
    """The peer id that ``payload`` proves for the handshake's remote static key."""
    if len(payload) != PAYLOAD_SIZE:
        raise NoiseError(
            f"the identity payload is {len(payload)} bytes, expected {PAYLOAD_SIZE}"
        )
    peer_id = peer_id_from_public_key(payload[:32])
    if not verify(peer_id, payload[32:], SIGNATURE_PREFIX + state.remote_static):
        raise HandshakeError(
            f"noise handshake with {where} refused: the peer claims peer id {peer_id} but "
            "holds no signature by that identity over its handshake key (impersonation?)"
        )
    if expected is not None and peer_id != expected:
        raise HandshakeError(
            f"noise handshake with {where} refused: expected peer {expected}, but the peer "
            f"proved it is {peer_id}"
        )
    return peer_id
