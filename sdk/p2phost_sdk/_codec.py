"""The codec kind: how message bodies become bytes and back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class Codec(ABC):
    """Encodes and decodes message bodies for one content type.

    Bodies are the JSON data model: None, bool, int, float, str, lists and dicts with
    string keys (codecs may accept more, such as bytes).
    """

    #: The content type on the wire, e.g. ``"application/json"``.
    content_type: ClassVar[str] = ""

    @abstractmethod
    def encode(self, value: Any) -> bytes:
        """``value`` as bytes; raises ``CodecError`` if it cannot be encoded."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """The value in ``data``; raises ``CodecError`` on anything malformed."""
