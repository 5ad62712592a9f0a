"""Both official codecs pass the SDK's codec conformance kit."""

from __future__ import annotations

import pytest

from p2phost_sdk import Codec, CodecError
from p2phost_sdk.testing.codec import CodecConformance
from tests.discovery.plugins import use_plugin_source

use_plugin_source("json-codec")
use_plugin_source("msgpack-codec")

from p2phost_json_codec import JsonCodec  # noqa: E402
from p2phost_msgpack_codec import MsgpackCodec  # noqa: E402


class TestJsonCodec(CodecConformance):
    @pytest.fixture
    def codec(self) -> Codec:
        return JsonCodec()

    def test_nan_is_refused_for_portability(self, codec: Codec) -> None:
        with pytest.raises(CodecError):
            codec.encode(float("nan"))

    def test_output_is_compact_utf8(self, codec: Codec) -> None:
        assert codec.encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


class TestMsgpackCodec(CodecConformance):
    @pytest.fixture
    def codec(self) -> Codec:
        return MsgpackCodec()

    def test_bytes_round_trip(self, codec: Codec) -> None:
        assert codec.decode(codec.encode({"blob": b"\x00\xff"})) == {"blob": b"\x00\xff"}

    def test_a_failed_encode_leaves_the_packer_usable(self, codec: Codec) -> None:
        with pytest.raises(CodecError):
            codec.encode([1, object()])
        assert codec.decode(codec.encode([1, 2])) == [1, 2]
