"""Unit tests of the signature document and key formats (pure functions, no I/O)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2phost_sdk import Identity
from p2phost_sdk.signing import (
    PluginSignature,
    SignatureFormatError,
    format_publisher_key,
    parse_publisher_key,
    signed_message,
)

SHA = "ab" * 32


def test_round_trip_and_domain_separation() -> None:
    identity = Identity.generate()
    signature = PluginSignature.create(identity, "x-1.0-py3-none-any.whl", SHA)
    again = PluginSignature.parse(signature.to_bytes())
    assert again == signature and again.verifies()
    assert signature.publisher_key == format_publisher_key(identity.public_key)
    assert signed_message("x.whl", SHA) == b"p2phost-plugin-signature-v1\nx.whl\n" + SHA.encode()
    # The same key signing the bare digest (another protocol) does not make a plugin signature.
    raw = base64.b64encode(identity.sign(SHA.encode())).decode()
    assert not PluginSignature("x.whl", SHA, signature.publisher_key, raw).verifies()


@pytest.mark.parametrize("change", ["filename", "sha256", "publisher_key"])
def test_any_changed_field_breaks_the_signature(change: str) -> None:
    signature = PluginSignature.create(Identity.generate(), "x.whl", SHA)
    other = {"filename": "y.whl", "sha256": "cd" * 32,
             "publisher_key": format_publisher_key(Identity.generate().public_key)}
    fields = {**signature.__dict__, change: other[change]}
    assert not PluginSignature(**fields).verifies()


def test_foreign_and_malformed_documents() -> None:
    assert PluginSignature.parse(b"-----BEGIN PGP SIGNATURE-----\n...") is None
    assert PluginSignature.parse(b"[1, 2]") is None
    good = json.loads(PluginSignature.create(Identity.generate(), "x.whl", SHA).to_bytes())
    for broken, message in (
        ({**good, "format": "p2phost-plugin-signature-v9"}, "unknown signature format"),
        ({**good, "signature": "***"}, "not valid base64"),
        ({**good, "signature": base64.b64encode(b"short").decode()}, "not 64 bytes"),
        ({**good, "sha256": "XYZ"}, "64 lowercase hex"),
        ({**good, "publisher_key": "ssh-ed25519 AAAA"}, "not a publisher key"),
        ({k: v for k, v in good.items() if k != "filename"}, "lacks filename"),
    ):
        with pytest.raises(SignatureFormatError, match=message):
            PluginSignature.parse(json.dumps(broken).encode())


@given(st.binary(max_size=600))
def test_garbage_is_not_a_signature(data: bytes) -> None:
    try:
        signature = PluginSignature.parse(data)
    except SignatureFormatError:
        return
    assert signature is None or not signature.verifies()


GOOD = json.loads(PluginSignature.create(Identity.generate(), "x.whl", SHA).to_bytes())
_FIELDS = st.sampled_from(sorted(GOOD))
_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=90),
                    st.sampled_from([v[:-2] + "==" for v in GOOD.values()]))


@given(st.dictionaries(_FIELDS, _VALUES, min_size=1, max_size=5))
def test_a_mutated_document_is_refused_or_does_not_verify(changes: dict[str, object]) -> None:
    doc = {**GOOD, **changes}
    try:
        signature = PluginSignature.parse(json.dumps(doc).encode())
    except SignatureFormatError:
        return
    assert signature is not None
    assert signature.verifies() == (doc == GOOD)


def test_publisher_key_form() -> None:
    raw = Identity.generate().public_key
    assert parse_publisher_key(format_publisher_key(raw)) == raw
    for bad in ("", "ed25519:", "ed25519:AAAA", "ssh-ed25519:" + base64.b64encode(raw).decode()):
        with pytest.raises(SignatureFormatError):
            parse_publisher_key(bad)
