"""The external side's codecs: how a broker's payload becomes a p2phost body and back.

``json`` and ``msgpack`` carry structured bodies; ``text`` is a UTF-8 string; ``raw`` is
the bytes as they are (the p2phost side then needs a codec that carries bytes, such as
msgpack-codec). A payload that does not decode is a :class:`~p2phost_sdk.CodecError`:
the bridge puts it in the dead-letter store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack

from p2phost_sdk import CodecError


@dataclass(frozen=True)
class ExternalCodec:
    """One of :data:`CODECS`."""

    name: str
    content_type: str

    def decode(self, payload: bytes) -> Any:
        """The body of a broker payload; CodecError when it is not one."""
        try:
            if self.name == "json":
                return json.loads(payload)
            if self.name == "msgpack":
                return msgpack.unpackb(payload, raw=False, strict_map_key=False)
            if self.name == "text":
                return payload.decode("utf-8")
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise CodecError(f"not {self.name}: {type(exc).__name__}: {exc}") from None
        return bytes(payload)

    def encode(self, body: Any) -> bytes:
        """A broker payload for ``body``; CodecError when this codec cannot carry it."""
        try:
            if self.name == "json":
                return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            if self.name == "msgpack":
                return bytes(msgpack.packb(body, use_bin_type=True))
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode as {self.name}: {exc}") from None
        if isinstance(body, str):
            return body.encode("utf-8")
        if isinstance(body, bytes | bytearray | memoryview) and self.name == "raw":
            return bytes(body)
        kinds = "str" if self.name == "text" else "bytes or str"
        raise CodecError(f"codec {self.name} carries {kinds} bodies, got {type(body).__name__}")


#: The codecs a mapping may name.
CODECS = {c.name: c for c in (ExternalCodec("json", "application/json"),
                              ExternalCodec("msgpack", "application/msgpack"),
                              ExternalCodec("text", "text/plain"),
                              ExternalCodec("raw", "application/octet-stream"))}
