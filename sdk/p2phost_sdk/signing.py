"""Publisher signatures of plugin files: the one format the CLI, the registry and installers share.

A publisher signs the sha256 of each file it publishes with an Ed25519 key. What is signed is
domain-separated, so a plugin signature can never be replayed as any other p2phost signature::

    b"p2phost-plugin-signature-v1\\n" + filename + b"\\n" + sha256 hex

A publisher key is written ``ed25519:BASE64`` (the raw 32-byte public key in standard base64)
everywhere: in ``p2phost key show``, the registry's JSON API and ``p2phost.lock``. The
signature travels as a small JSON document (the registry serves it as ``FILE.sig``) that names
the file, its sha256 and the key, so a verifier can say *which* key signed what.
"""

from ._errors import SignatureFormatError
from ._signing import (
    FORMAT,
    KEY_PROOF_DOMAIN,
    MAX_SIGNATURE_SIZE,
    PluginSignature,
    format_publisher_key,
    key_proof_message,
    parse_publisher_key,
    signed_message,
    verify_with_key,
)

__all__ = [
    "FORMAT",
    "KEY_PROOF_DOMAIN",
    "MAX_SIGNATURE_SIZE",
    "PluginSignature",
    "SignatureFormatError",
    "format_publisher_key",
    "key_proof_message",
    "parse_publisher_key",
    "signed_message",
    "verify_with_key",
]
