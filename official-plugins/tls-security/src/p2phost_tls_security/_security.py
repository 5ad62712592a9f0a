"""TLS 1.3 between two p2phost nodes, each proving its peer id with its certificate.

Both sides present a self-signed certificate of their identity key (mutual TLS, no CA);
a verify callback accepts exactly a certificate that certifies a p2phost identity, and
the expected peer id when one is given. The dialler is the TLS client.

pyOpenSSL rather than the standard library's ``ssl``: ``ssl`` has no verify callback, so
a server there cannot accept a client certificate that no loaded CA vouches for, and
mutual authentication between self-signed peers is impossible with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL, crypto

from p2phost_sdk import (
    Connection,
    HandshakeError,
    Identity,
    SecureConnection,
    Security,
    TransportError,
    run_handshake,
)

from ._certificate import CertificateError, make_certificate, peer_id_of
from ._connection import TlsConnection, describe, flush

#: The largest underlying frame the TLS byte stream is cut into.
_CHUNK = 256 * 1024
#: The largest frame of the handshake: its flights (a hello, a self-signed Ed25519
#: certificate and a few small messages) are a few kilobytes.
_HANDSHAKE_CHUNK = 64 * 1024


@dataclass
class _Attempt:
    """What the verify callback of one handshake knows and found."""

    expected_peer_id: str | None
    peer_id: str | None = None
    refusal: str | None = None


def _verify(
    tls: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
) -> bool:
    # OpenSSL's own verdict (``ok``) is ignored on purpose: it wants a CA, we want a key.
    attempt: _Attempt = tls.get_app_data()
    if depth != 0:
        attempt.refusal = "the peer sent a certificate chain, not one self-signed certificate"
        return False
    try:
        peer_id = peer_id_of(certificate.to_cryptography())
    except CertificateError as exc:
        attempt.refusal = str(exc)
        return False
    except Exception as exc:  # a callback must not raise into OpenSSL
        attempt.refusal = f"the peer's certificate cannot be read ({exc})"
        return False
    if attempt.expected_peer_id is not None and peer_id != attempt.expected_peer_id:
        attempt.refusal = (
            f"expected peer {attempt.expected_peer_id}, but the peer presents peer id {peer_id}"
        )
        return False
    attempt.peer_id = peer_id
    return True


class TlsSecurity(Security):
    """``tls``: TLS 1.3 with self-signed Ed25519 certificates proving each peer id."""

    protocol = "tls"
    #: Handshake flights go in frames of at most 64 KiB; a hello after them (64 KiB at
    #: most) gains some record overhead.
    max_handshake_frame = _HANDSHAKE_CHUNK + 4096

    def __init__(self, *, max_frame_size: int = 16 * 1024 * 1024) -> None:
        if max_frame_size < 1024:
            raise ValueError(f"max_frame_size must be at least 1024 bytes, not {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._chunk = min(max_frame_size, _CHUNK)
        # A context holds the certificate and key; made once per identity, not per handshake.
        self._contexts: dict[bytes, SSL.Context] = {}

    def _context(self, identity: Identity) -> SSL.Context:
        context = self._contexts.get(identity.public_key)
        if context is None:
            context = SSL.Context(SSL.TLS_METHOD)
            context.set_min_proto_version(SSL.TLS1_3_VERSION)
            context.set_max_proto_version(SSL.TLS1_3_VERSION)
            context.use_certificate(make_certificate(identity))
            context.use_privatekey(identity.private_key)
            context.check_privatekey()
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
            # No resumption: every connection proves its identity afresh.
            context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self._contexts[identity.public_key] = context
        return context

    async def secure(
        self,
        connection: Connection,
        *,
        identity: Identity,
        initiator: bool,
        expected_peer_id: str | None,
        timeout: float,
    ) -> SecureConnection:
        """Run the TLS 1.3 handshake; the result's ``remote_peer_id`` is proven."""
        return await run_handshake(
            connection,
            self._handshake(connection, identity, initiator, expected_peer_id),
            protocol="tls", timeout=timeout,
        )

    async def _handshake(
        self, connection: Connection, identity: Identity, initiator: bool,
        expected_peer_id: str | None,
    ) -> TlsConnection:
        attempt = _Attempt(expected_peer_id)
        tls = SSL.Connection(self._context(identity), None)
        tls.set_app_data(attempt)
        if initiator:
            tls.set_connect_state()
        else:
            tls.set_accept_state()
        where = connection.remote_address or "the peer"
        while True:
            try:
                tls.do_handshake()
                finished = True
            except SSL.WantReadError:
                finished = False
            except SSL.Error as exc:
                try:  # tell the peer why (the alert), when the medium still takes it
                    await flush(tls, connection, min(self._chunk, _HANDSHAKE_CHUNK))
                except TransportError:
                    pass
                reason = attempt.refusal or describe(exc)
                raise HandshakeError(f"tls handshake with {where} refused: {reason}") from None
            await flush(tls, connection, min(self._chunk, _HANDSHAKE_CHUNK))
            if finished:
                break
            data = await connection.recv()
            if data:  # an empty frame carries no TLS bytes (and OpenSSL refuses to take none)
                tls.bio_write(data)
        if attempt.peer_id is None:  # OpenSSL guarantees a verified certificate by now
            raise HandshakeError(f"tls handshake with {where}: the peer presented no identity")
        return TlsConnection(
            connection, tls, remote_peer_id=attempt.peer_id,
            max_frame_size=self.max_frame_size, chunk=self._chunk,
        )
