"""The envelope: a compact binary header in front of every frame's body (docs/wire.md).

Layout, big-endian, 30 fixed bytes then four short strings, then the body::

    u8  version          1
    u8  kind             Kind
    u64 message id       unique per sender and session
    u64 correlation id   the request a reply/error/ack answers; 0 = none
    u64 deadline         Unix time in ms after which the sender stops waiting; 0 = none
    u8  sender length    then the four strings, UTF-8, in this order:
    u8  recipient length   sender, recipient, topic, content type
    u8  topic length     (sender, recipient and content type may be empty on a stream
    u8  content type length  connection: they are then the connection's own)
    ...  body            codec-encoded (UTF-8 text for ERROR and GOODBYE, JSON for HELLO)

A kind with its high bit set (``TRACED``) carries a trace context of ``TRACE_SIZE`` bytes
between the strings and the body (W3C trace context, binary: trace id, span id, flags).
It is sent only to peers whose hello says ``"trace": 1``, so older peers never see it.

Content type ``application/octet-stream`` (:data:`RAW`) marks a raw body: bytes an app
sent as they are (``p2phost_sdk.Raw``), not through the codec. It is sent only to peers
whose hello says ``"raw": 1``; the body is decoded as a memoryview of the frame (a large
frame's buffer is not copied again).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from p2phost_sdk import MessageKind

from .._errors import WireError

#: The envelope format version this node writes and reads.
VERSION = 1
HEADER = struct.Struct("!BBQQQBBBB")
#: The most bytes a sender, recipient, topic or content type may take.
MAX_FIELD = 255
#: Set in the kind byte when a trace context follows the strings.
TRACED = 0x80
#: The trace context: 16-byte trace id, 8-byte parent span id, 1 byte of trace flags.
TRACE_SIZE = 25
#: The content type of a raw body, and the hello key of the nodes that read them.
RAW = b"application/octet-stream"
RAW_HELLO = "raw"


class Kind(enum.IntEnum):
    """What an envelope is for. App kinds first; the rest keep the connection going."""

    MESSAGE = 0
    REQUEST = 1
    REPLY = 2
    ERROR = 3
    ACK = 4
    HELLO = 16
    PING = 17
    PONG = 18
    GOODBYE = 19


#: Wire kind -> the kind an app sees.
MESSAGE_KINDS = {
    Kind.MESSAGE: MessageKind.MESSAGE,
    Kind.REQUEST: MessageKind.REQUEST,
    Kind.REPLY: MessageKind.REPLY,
    Kind.ERROR: MessageKind.ERROR,
    Kind.ACK: MessageKind.ACK,
}
_KINDS = {int(k): k for k in Kind}
_RAW_TYPE = RAW.decode()


def encode(
    kind: Kind,
    message_id: int,
    topic: bytes = b"",
    body: bytes = b"",
    *,
    correlation_id: int = 0,
    deadline: int = 0,
    sender: bytes = b"",
    recipient: bytes = b"",
    content_type: bytes = b"",
    trace: bytes = b"",
) -> bytes:
    """One frame. Strings are passed encoded so hot callers can cache them."""
    try:
        head = HEADER.pack(VERSION, kind | TRACED if trace else kind, message_id,
                           correlation_id, deadline, len(sender), len(recipient), len(topic),
                           len(content_type))
    except struct.error as exc:
        raise WireError(f"cannot encode envelope: a field is out of range ({exc})") from exc
    if sender or recipient or content_type or trace:
        if trace and len(trace) != TRACE_SIZE:
            raise WireError(f"a trace context is {TRACE_SIZE} bytes, not {len(trace)}")
        return b"".join((head, sender, recipient, topic, content_type, trace, body))
    return head + topic + body


#: The ids and deadline of an app frame (see :func:`header_parts`).
IDS = struct.Struct("!QQQ")


def header_parts(kind: Kind, topic: bytes) -> tuple[bytes, bytes]:
    """What an app frame of ``kind`` on ``topic`` has around its ids, packed once.

    For the hot senders: a frame with no sender, recipient or content type is
    ``head + IDS.pack(message_id, correlation_id, deadline) + tail + body``;
    the head and tail depend on the kind and topic only.
    """
    if len(topic) > MAX_FIELD:
        raise WireError(f"topic {topic[:40]!r}... is longer than {MAX_FIELD} bytes")
    return bytes((VERSION, kind)), bytes((0, 0, len(topic), 0)) + topic


#: A REPLY's or ERROR's header (version, kind, message id, correlation id): no topic,
#: strings or deadline, so one pack makes it, the same bytes :func:`encode` makes.
ANSWER = struct.Struct("!BBQQ12x")


@dataclass(slots=True)
class Envelope:
    """A decoded frame."""

    kind: Kind
    message_id: int
    topic: str
    body: bytes
    correlation_id: int = 0
    deadline: int = 0
    sender: str = ""
    recipient: str = ""
    content_type: str = ""
    #: The sender's trace context (``TRACE_SIZE`` bytes), or empty.
    trace: bytes = b""

    def to_frame(self) -> bytes:
        """This envelope as one frame."""
        return encode(
            self.kind, self.message_id, self.topic.encode(), self.body,
            correlation_id=self.correlation_id, deadline=self.deadline,
            sender=self.sender.encode(), recipient=self.recipient.encode(),
            content_type=self.content_type.encode(), trace=self.trace,
        )


def decode(frame: bytes) -> Envelope:
    """Parse one frame; raises :class:`WireError` saying what is wrong with it."""
    if len(frame) < HEADER.size:
        if frame and frame[0] != VERSION:
            raise WireError(f"unknown envelope version {frame[0]} (this node speaks {VERSION})")
        raise WireError(f"frame of {len(frame)} bytes is shorter than the "
                        f"{HEADER.size}-byte envelope header")
    version, kind, mid, corr, deadline, ls, lr, lt, lc = HEADER.unpack_from(frame)
    if version != VERSION:
        raise WireError(f"unknown envelope version {version} (this node speaks {VERSION})")
    known = _KINDS.get(kind)
    trace_size = 0
    if known is None:
        known = _KINDS.get(kind & ~TRACED) if kind & TRACED else None
        if known is None:
            raise WireError(f"unknown envelope kind {kind}")
        trace_size = TRACE_SIZE
    start = HEADER.size
    end = start + ls + lr + lt + lc
    if end + trace_size > len(frame):
        raise WireError("envelope header says its strings are longer than the frame")
    try:
        if ls or lr or lc:
            sender, recipient, topic, content_type = _split(frame, start, ls, lr, lt, lc)
        else:
            sender = recipient = content_type = ""
            topic = frame[start:end].decode()
    except UnicodeDecodeError as exc:
        raise WireError(f"envelope string is not UTF-8: {exc}") from exc
    if lc == len(RAW) and content_type == _RAW_TYPE:  # raw bytes: a view, not a copy
        return Envelope(known, mid, topic, memoryview(frame)[end + trace_size:],  # type: ignore[arg-type]
                        corr, deadline, sender, recipient, content_type,
                        bytes(frame[end:end + trace_size]))
    if trace_size:
        return Envelope(known, mid, topic, frame[end + trace_size:], corr, deadline, sender,
                        recipient, content_type, frame[end:end + trace_size])
    return Envelope(known, mid, topic, frame[end:], corr, deadline, sender, recipient,
                    content_type)


def _split(frame: bytes, start: int, *lengths: int) -> tuple[str, str, str, str]:
    out = []
    for length in lengths:
        out.append(frame[start:start + length].decode())
        start += length
    return out[0], out[1], out[2], out[3]


def wire_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a topic (or codec) on the wire, or None when it can: a
    printable line, not blank, that fits an envelope's field. Peers leave any other out
    of a hello (cut short it would name another; no sender names a blank one), so
    nothing would reach a handler of it."""
    # Printable first: a lone surrogate (JSON's "\\ud800" in a peer's hello) is not, and
    # UTF-8 cannot encode it.
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        return f"it has a character that is not printable ({bad!r})"
    if not name.strip():  # (no frame names one: "empty for kinds that have none")
        return "it is only spaces" if name else "it is empty"
    size = len(name.encode())
    if size > MAX_FIELD:
        return f"it is {size} bytes long in UTF-8, over the {MAX_FIELD} a message's topic holds"
    return None
