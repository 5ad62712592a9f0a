"""The codec conformance kit fails a codec that decodes a frame's first value and ignores
the bytes after it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from p2phost_sdk import Codec, CodecError
from p2phost_sdk.testing.codec import CodecConformance


class _FirstValueOnly(Codec):
    """JSON that stops at the end of the first value (``raw_decode``), as a careless codec
    would."""

    content_type = "application/x-first-value"

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(str(exc)) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.JSONDecoder().raw_decode(data.decode())[0]
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError(str(exc)) from exc


@pytest.mark.parametrize("extra", [b"x", b"SECOND"])
def test_the_kit_fails_a_codec_that_ignores_trailing_bytes(extra: bytes) -> None:
    codec = _FirstValueOnly()
    assert codec.decode(codec.encode({"a": 1}) + extra) == {"a": 1}  # the defect
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        CodecConformance().test_trailing_bytes_are_a_codec_error(codec, extra)
