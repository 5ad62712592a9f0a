"""The codec conformance kit: the JSON data model round-trips, garbage is a CodecError.

Subclass :class:`CodecConformance` and give it a ``codec`` fixture::

    import pytest
    from p2phost_sdk.testing.codec import CodecConformance

    class TestMyCodec(CodecConformance):
        @pytest.fixture
        def codec(self):
            return MyCodec()

The values are generated from a fixed seed, so a failure names a value that fails again.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from .._codec import Codec
from .._errors import CodecError

__all__ = ["CodecConformance", "json_values"]

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def json_values(count: int, seed: int = 1) -> list[Any]:
    """``count`` values of the JSON data model, nested, deterministic for ``seed``."""
    rng = random.Random(seed)
    alphabet = "abcxyz 0129_-\"\\\n\t\u00e9\u4e2d\U0001f600"

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))

    def value(depth: int) -> Any:
        choice = rng.randrange(9 if depth < 4 else 6)
        if choice == 0:
            return None
        if choice == 1:
            return rng.random() < 0.5
        if choice == 2:
            return rng.choice([0, 1, -1, 2**31, -(2**31), 2**53, 2**63 - 1, -(2**63),
                               rng.randrange(-(10**6), 10**6)])
        if choice == 3:
            return rng.choice([0.0, -1.5, 1e-300, 1e300, rng.uniform(-1e6, 1e6)])
        if choice in (4, 5):
            return text()
        if choice in (6, 7):
            return [value(depth + 1) for _ in range(rng.randrange(5))]
        return {text(): value(depth + 1) for _ in range(rng.randrange(5))}

    return [value(0) for _ in range(count)]


_GARBAGE = [b"\xff", b"\xc1", b"{", b"[1, 2", b"\x92\x01", b"\x00\xff\x00\xff", b"\xde\xad\xbe\xef",
            b"\x80\x81\x82", b"\xdb\xff\xff\xff\xff"]


class CodecConformance:
    """The conformance tests every codec must pass. Needs a ``codec`` fixture."""

    def test_content_type_is_a_media_type(self, codec: Codec) -> None:
        assert _CONTENT_TYPE.match(type(codec).content_type), type(codec).content_type

    @pytest.mark.parametrize("value", json_values(300), ids=lambda v: type(v).__name__)
    def test_json_values_round_trip(self, codec: Codec, value: Any) -> None:
        data = codec.encode(value)
        assert isinstance(data, bytes)
        assert codec.decode(data) == value
        assert codec.encode(value) == data, "encoding must be deterministic"

    def test_values_hypothesis_generates_round_trip(self, codec: Codec) -> None:
        """Property test: any value of the JSON data model (a failure is shrunk to the least)."""
        pytest.importorskip("hypothesis")
        from hypothesis import given, settings
        from hypothesis import strategies as st

        scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                   | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
        values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                              | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                              max_leaves=20)

        @settings(max_examples=150, deadline=None, database=None)
        @given(values)
        def round_trip(value: Any) -> None:
            assert codec.decode(codec.encode(value)) == value

        round_trip()

    def test_a_large_value_round_trips(self, codec: Codec) -> None:
        value = {"text": "x" * (1 << 20), "items": list(range(10_000))}
        assert codec.decode(codec.encode(value)) == value

    # Stable ids (an object's repr holds its address), so parallel runs collect alike.
    @pytest.mark.parametrize("value", [object(), {1j}, float("nan")],
                             ids=["object", "set-of-complex", "nan"])
    def test_what_cannot_be_encoded_is_a_codec_error(self, codec: Codec, value: Any) -> None:
        if isinstance(value, float):  # NaN: refusing or keeping it are both fine
            try:
                data = codec.encode(value)
            except CodecError:
                return
            decoded = codec.decode(data)
            assert decoded != decoded, "NaN must come back as NaN if it is accepted"
            return
        with pytest.raises(CodecError):
            codec.encode(value)

    @pytest.mark.parametrize("data", _GARBAGE, ids=repr)
    def test_garbage_is_a_codec_error_or_a_value(self, codec: Codec, data: bytes) -> None:
        # Some short byte strings are valid in some formats; nothing else may escape.
        try:
            codec.decode(data)
        except CodecError as exc:
            assert str(exc), "the error must say what is wrong"

    def test_random_bytes_never_raise_anything_but_codec_error(self, codec: Codec) -> None:
        rng = random.Random(5)
        for _ in range(2000):
            try:
                codec.decode(rng.randbytes(rng.randrange(1, 64)))
            except CodecError:
                pass

    def test_every_truncation_of_a_container_is_a_codec_error(self, codec: Codec) -> None:
        data = codec.encode({"name": "alice", "items": [1, 2.5, "three", None, True]})
        for end in range(len(data)):
            with pytest.raises(CodecError):
                codec.decode(data[:end])

    @pytest.mark.parametrize("extra", [b"\x00", b"x", b"\xff\xff", b"SECOND"], ids=repr)
    def test_trailing_bytes_are_a_codec_error(self, codec: Codec, extra: bytes) -> None:
        # A frame is one value. A codec that stops at the end of the first value and
        # ignores the rest lets two senders' bytes, or an attacker's suffix, pass as one.
        data = codec.encode({"name": "alice", "items": [1, 2.5, "three", None, True]})
        for tail in (extra, data):
            with pytest.raises(CodecError):
                codec.decode(data + tail)
