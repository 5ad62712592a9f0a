"""The throwaway TLS certificate QUIC's handshake needs.

QUIC always runs TLS 1.3, and a TLS server must present a certificate. p2phost does not
use it for identity: dialers do not verify it, and the node's security plugin proves
each side's peer id over the connection. So every transport makes its own self-signed
key and certificate in memory when it first listens; nothing is written to disk.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ephemeral_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new P-256 key and a self-signed certificate for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2phost quic-transport")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return certificate, key
