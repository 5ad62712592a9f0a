"""MessagePack codec for p2phost (``application/msgpack``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from p2phost_sdk import Codec, CodecError, PluginContext, hookimpl

__all__ = ["MsgpackCodec", "p2phost_codecs"]

_unpackb = msgpack.unpackb


class MsgpackCodec(Codec):
    """Bodies as MessagePack: the JSON data model plus ``bytes``."""

    content_type = "application/msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def encode(self, value: Any) -> bytes:
        """``value`` as MessagePack."""
        try:
            return self._packer.pack(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            self._packer.reset()
            raise CodecError(f"cannot encode as MessagePack: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """The value of MessagePack ``data`` (exactly one object, nothing after it)."""
        try:
            # (raw=False is msgpack's default since 1.0: one keyword less per body)
            return _unpackb(data, strict_map_key=False)
        except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
            raise CodecError(f"body is not valid MessagePack: {exc or type(exc).__name__}") from exc


@hookimpl
def p2phost_codecs(context: PluginContext) -> Sequence[Codec]:
    """The MessagePack codec."""
    return [MsgpackCodec()]
