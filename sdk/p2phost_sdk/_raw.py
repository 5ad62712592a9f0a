"""Raw bodies: bytes that travel as they are, without the codec.

An app sends ``Raw(part, ...)`` where it would send a body; the node writes the parts
after the envelope with the content type :data:`RAW_CONTENT_TYPE` and does not encode
them (no MessagePack or JSON copy of a large binary payload). The receiving handler gets
``message.body`` as a ``memoryview`` of the bytes (``bytes(message.body)`` when it needs
``bytes``) and ``message.content_type == RAW_CONTENT_TYPE``.

A peer whose node does not read raw bodies (its hello does not say ``"raw": 1``) gets
the joined bytes through the connection's codec instead (``bytes`` with MessagePack).
Raw bodies are for messages, requests and publishes on topics without acknowledged
delivery; replies, stored letters and acknowledged topics take codec bodies.
"""

from __future__ import annotations

__all__ = ["RAW_CONTENT_TYPE", "Raw"]

#: The envelope content type of a raw body.
RAW_CONTENT_TYPE = "application/octet-stream"


class Raw:
    """A body of bytes sent as they are, given as one or more parts (bytes, bytearray,
    memoryview, or a NumPy array's ``.data``): they are written after the envelope without being
    joined first where the transport allows it, so a large buffer is not copied."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, *parts: bytes | bytearray | memoryview) -> None:
        self.parts: tuple[bytes | memoryview, ...] = tuple(
            p if isinstance(p, bytes) else memoryview(p).cast("B") for p in parts)
        #: The body's size in bytes.
        self.nbytes = sum(len(p) for p in self.parts)

    def tobytes(self) -> bytes:
        """The body as one ``bytes`` (a copy)."""
        return b"".join(self.parts)

    def __repr__(self) -> str:
        return f"Raw({self.nbytes} bytes)"
