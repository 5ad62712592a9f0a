"""TLS channel security for p2phost: TLS 1.3 with self-signed identity certificates."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Security, hookimpl

from ._certificate import CertificateError, make_certificate, peer_id_of
from ._connection import TlsConnection
from ._security import TlsSecurity

__all__ = [
    "CertificateError",
    "TlsConnection",
    "TlsSecurity",
    "make_certificate",
    "p2phost_security",
    "peer_id_of",
]


@hookimpl
def p2phost_security(context: PluginContext) -> Sequence[Security]:
    """TLS security, with the node's frame size limit."""
    return [TlsSecurity(max_frame_size=context.max_frame_size)]
