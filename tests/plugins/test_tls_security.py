"""tls-security: the SDK kit, identity certificates, peers presenting other certificates,
a standard TLS 1.3 client, real TCP with a man in the middle, and fuzzing."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from p2phost_sdk import Connection, ConnectionClosed, HandshakeError, Identity, Security
from p2phost_sdk.testing import memory_pipe
from p2phost_sdk.testing.security import SecurityConformance, assert_refused
from tests.discovery.plugins import use_plugin_source

from .security_support import ALICE, BOB, TIMEOUT, Gate, SecurityOnTheWire

use_plugin_source("tls-security")

from p2phost_tls_security import (  # noqa: E402
    CertificateError,
    TlsSecurity,
    make_certificate,
    peer_id_of,
)
from p2phost_tls_security._connection import flush  # noqa: E402
from p2phost_tls_security._security import _verify  # noqa: E402


@pytest.fixture(params=[16 * 1024 * 1024, 4096], ids=["16MiB", "4KiB"])
def max_frame_size(request: pytest.FixtureRequest) -> int:
    return int(request.param)


class TestTlsConformance(SecurityConformance):
    @pytest.fixture
    def security_factory(self, max_frame_size: int) -> Callable[[], Security]:
        return lambda: TlsSecurity(max_frame_size=max_frame_size)


def _tls() -> Security:
    return TlsSecurity()


class TestTlsOnTheWire(SecurityOnTheWire):
    make = staticmethod(_tls)
    plugin = "tls-security"


async def test_a_lone_frame_goes_out_at_once_and_a_refused_one_still_goes_out_in_order(
) -> None:
    a, b = memory_pipe()
    gate = Gate(a)
    alice, bob = await asyncio.gather(
        TlsSecurity().secure(gate, identity=ALICE, initiator=True, expected_peer_id=None,
                             timeout=TIMEOUT),
        TlsSecurity().secure(b, identity=BOB, initiator=False, expected_peer_id=None,
                             timeout=TIMEOUT))
    gate.open = True
    assert alice.try_send(b"at once")
    assert await asyncio.wait_for(bob.recv(), TIMEOUT) == b"at once"
    # TLS has numbered the record before the transport refuses it: it still goes out,
    # ahead of what is sent after it, and nothing else is tried at once meanwhile.
    gate.open = False
    assert alice.try_send(b"refused by the transport")
    assert not alice.try_send(b"not while one waits")
    await alice.send(b"after it")
    assert alice.try_send(b"big" * 100_000) is False  # more than one record's worth
    assert [await asyncio.wait_for(bob.recv(), TIMEOUT) for _ in range(2)] == [
        b"refused by the transport", b"after it"]
    gate.open = True
    assert alice.try_send(b"at once again")
    assert alice.try_send(b"and again")
    assert [await asyncio.wait_for(bob.recv(), TIMEOUT) for _ in range(2)] == [
        b"at once again", b"and again"]
    await alice.close()
    await bob.close()


# -- certificates -----------------------------------------------------------------------------

def _certificate(
    subject_key: CertificateIssuerPrivateKeyTypes, common_name: str,
    signer: CertificateIssuerPrivateKeyTypes | None = None, issuer: str | None = None,
) -> x509.Certificate:
    signer = signer or subject_key
    now = datetime.datetime.now(datetime.UTC)
    algorithm = hashes.SHA256() if isinstance(signer, ec.EllipticCurvePrivateKey) else None
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                   issuer or common_name)]))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer, algorithm)
    )


def test_an_identity_certificate_certifies_its_peer_id() -> None:
    identity = Identity.generate()
    assert peer_id_of(make_certificate(identity)) == identity.peer_id


@pytest.mark.parametrize("problem, match", [
    ("ecdsa-key", "not an Ed25519 node identity"),
    ("other-name", "but its key is peer"),
    ("signed-by-someone-else", "not self-signed"),
])
def test_certificates_that_do_not_certify_an_identity_are_refused(
        problem: str, match: str) -> None:
    identity, other = Identity.generate(), Identity.generate()
    if problem == "ecdsa-key":
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(key, identity.peer_id)
    elif problem == "other-name":
        certificate = _certificate(identity.private_key, other.peer_id)
    else:
        certificate = _certificate(identity.private_key, identity.peer_id,
                                   signer=other.private_key)
    with pytest.raises(CertificateError, match=match):
        peer_id_of(certificate)


# -- peers presenting other certificates ------------------------------------------------------

class _OtherCertificate(TlsSecurity):
    """A TLS peer presenting ``certificate`` (plus ``chain``) instead of its identity's."""

    def __init__(self, certificate: x509.Certificate, key: CertificateIssuerPrivateKeyTypes,
                 chain: tuple[x509.Certificate, ...] = ()) -> None:
        super().__init__()
        self._presented = certificate, key, chain

    def _context(self, identity: Identity) -> SSL.Context:
        certificate, key, chain = self._presented
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.use_certificate(certificate)
        for extra in chain:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(key)
        context.set_verify(SSL.VERIFY_PEER, _verify)
        return context


def _presenting(case: str) -> tuple[_OtherCertificate, str]:
    """A client presenting the certificate of ``case``, and the refusal expected."""
    if case == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
        return _OtherCertificate(_certificate(key, "some-host"), key), "not an Ed25519"
    if case == "ca-issued":
        ca_key, leaf = ec.generate_private_key(ec.SECP256R1()), Identity.generate()
        ca = _certificate(ca_key, "some-ca")
        certificate = _certificate(leaf.private_key, leaf.peer_id, signer=ca_key,
                                   issuer="some-ca")
        return _OtherCertificate(certificate, leaf.private_key, (ca,)), "certificate chain"
    honest = Identity.generate()  # the control: this harness with a genuine certificate
    return _OtherCertificate(make_certificate(honest), honest.private_key), honest.peer_id


@pytest.mark.parametrize("case", ["ecdsa", "ca-issued", "honest"])
async def test_a_client_certificate_that_certifies_no_identity_is_refused(case: str) -> None:
    client, expected = _presenting(case)
    a, b = memory_pipe()
    alice, bob = await asyncio.gather(
        client.secure(a, identity=ALICE, initiator=True, expected_peer_id=None, timeout=5),
        TlsSecurity().secure(b, identity=BOB, initiator=False, expected_peer_id=None,
                             timeout=5),
        return_exceptions=True)
    if case == "honest":
        assert not isinstance(bob, BaseException), bob
        assert bob.remote_peer_id == expected
        return
    assert isinstance(bob, HandshakeError), bob
    assert expected in str(bob)
    await assert_refused(alice)


# -- a standard TLS 1.3 client ----------------------------------------------------------------

async def _stdlib_client(connection: Connection, identity: Identity, tmp: Path
                         ) -> tuple[str, bytes]:
    """Python's own ``ssl`` as the client: the TLS version and the first frame it hears."""
    (tmp / "cert.pem").write_bytes(make_certificate(identity).public_bytes(Encoding.PEM))
    (tmp / "key.pem").write_bytes(identity.private_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # it checks the server's certificate below instead
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)

    async def pump() -> None:
        if outgoing.pending:
            await connection.send(outgoing.read())

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await pump()
            incoming.write(await connection.recv())
    await pump()
    server = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    assert peer_id_of(server) == BOB.peer_id
    tls.write(struct.pack("!I", 5) + b"hello")
    await pump()
    heard = b""
    while len(heard) < 4 or len(heard) < 4 + struct.unpack_from("!I", heard)[0]:
        incoming.write(await connection.recv())
        try:
            while True:
                heard += tls.read(65536)
        except ssl.SSLWantReadError:
            pass
    return str(tls.version()), heard[4:]


async def test_a_standard_tls_13_client_interoperates(tmp_path: Path) -> None:
    a, b = memory_pipe()
    async with asyncio.timeout(TIMEOUT):
        client = asyncio.create_task(_stdlib_client(a, ALICE, tmp_path))
        server = await TlsSecurity().secure(b, identity=BOB, initiator=False,
                                            expected_peer_id=ALICE.peer_id, timeout=5)
        assert server.remote_peer_id == ALICE.peer_id
        assert await server.recv() == b"hello"
        await server.send(b"welcome")
        assert await client == ("TLSv1.3", b"welcome")
    await server.close()


async def test_frames_before_a_close_notify_in_the_same_read_are_handed_over() -> None:
    # A peer's last frames and its close_notify arrive in one underlying frame: the
    # frames are authenticated, so they are handed over before the end is.
    a, b = memory_pipe()
    alice, bob = await asyncio.gather(
        TlsSecurity().secure(a, identity=ALICE, initiator=True, expected_peer_id=None,
                             timeout=TIMEOUT),
        TlsSecurity().secure(b, identity=BOB, initiator=False, expected_peer_id=None,
                             timeout=TIMEOUT))
    frames = [b"frame %d" % i for i in range(50)]
    tls = alice._tls  # type: ignore[attr-defined]
    tls.sendall(b"".join(struct.pack("!I", len(f)) + f for f in frames))
    tls.shutdown()
    await flush(tls, a, 1 << 20)
    got: list[bytes] = []
    with pytest.raises(ConnectionClosed, match="ended the TLS session"):
        while len(got) <= len(frames):
            got += await asyncio.wait_for(bob.recv_many(), TIMEOUT)
    assert got == frames
