"""Self-signed Ed25519 certificates made from, and checked against, node identities.

A node's certificate is signed by, and certifies, the node's own identity key, with the
peer id as the subject's common name. There is no CA: a certificate is good when its key
is an Ed25519 key, its common name is the peer id of that key, and it is signed by that
key. That the peer holds the private key is proven by the TLS handshake itself (the
CertificateVerify signature over the transcript), not by the certificate.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from p2phost_sdk import Identity, peer_id_from_public_key

# Validity dates are not checked (the key, not a date, is the identity); a wide window
# keeps strict TLS stacks of other implementations from refusing the certificate.
_VALIDITY = datetime.timedelta(days=3650)


class CertificateError(ValueError):
    """A peer's certificate does not name and certify a p2phost identity."""


def make_certificate(identity: Identity) -> x509.Certificate:
    """A self-signed certificate of ``identity``: its key, its peer id, its signature."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.peer_id)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(identity.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .sign(identity.private_key, None)
    )


def peer_id_of(certificate: x509.Certificate) -> str:
    """The peer id ``certificate`` certifies; :class:`CertificateError` says why not."""
    key = certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError(
            f"the certificate's key is {type(key).__name__.removeprefix('_')}, not an "
            "Ed25519 node identity"
        )
    peer_id = peer_id_from_public_key(key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [peer_id]:
        raise CertificateError(
            f"the certificate names {[n.value for n in names]!r} but its key is peer {peer_id}"
        )
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            f"the certificate of peer {peer_id} is not self-signed by that peer's key"
        ) from None
    return peer_id
