"""JSON codec for p2phost: compact UTF-8 JSON bodies (``application/json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from p2phost_sdk import Codec, CodecError, PluginContext, hookimpl

__all__ = ["JsonCodec", "p2phost_codecs"]

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class JsonCodec(Codec):
    """Bodies as compact JSON; NaN and infinities are refused (not portable JSON)."""

    content_type = "application/json"

    def encode(self, value: Any) -> bytes:
        """``value`` as UTF-8 JSON."""
        try:
            return _encoder.encode(value).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise CodecError(f"cannot encode as JSON: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """The value of UTF-8 JSON ``data``."""
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise CodecError(f"body is not valid JSON: {exc}") from exc


@hookimpl
def p2phost_codecs(context: PluginContext) -> Sequence[Codec]:
    """The JSON codec."""
    return [JsonCodec()]
