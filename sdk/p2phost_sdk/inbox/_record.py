"""The records an inbox transport puts on a medium: one per frame or control signal.

A record is a 37-byte header, the sender's peer id and inbox, and a payload
(docs/transports.md)::

    4s  magic             b"p2pI": anything else on an inbox is foreign and ignored
    u8  version           1
    u8  type              RecordType
    u8  flags             bit 0: sent by the connection's dialler; bit 1: no reply
                          inbox (a LETTER from a sender that reads none)
    16s connection id     random, chosen by the dialler
    u32 epoch             random per sending side and incarnation of the connection
    u64 seq               position in the sender's direction (0: OPEN, ACCEPT, REOPEN)
    u8  sender length
    u8  inbox length      then the sender's peer id and the name of the inbox it reads
                          (empty: the same as its peer id), UTF-8, then the payload
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import ForeignRecord

MAGIC = b"p2pI"
VERSION = 1
HEADER = struct.Struct("!4sBBB16sIQBB")
_FROM_DIALLER = 1
_NO_REPLY = 2
_INBOX = re.compile(r"[a-z2-7]{52}(-[0-9a-f]{8})?")


def valid_inbox(name: str) -> bool:
    """Whether ``name`` is an inbox name a node may use: its peer id (base32), with
    ``-`` and 8 hex digits for a short-lived reply inbox. Media embed it in keys,
    subjects, topics and queue names, so nothing else is allowed."""
    return _INBOX.fullmatch(name) is not None


class RecordType(enum.IntEnum):
    """What a record says."""

    #: Dialler -> listener: open a connection (payload: the dial deadline, Unix ms, u64).
    OPEN = 1
    #: Listener -> dialler: the connection is open.
    ACCEPT = 2
    #: Listener -> dialler: no (payload: the reason, UTF-8).
    REFUSE = 3
    #: Either way: one frame of the connection.
    DATA = 4
    #: Either way: no more frames from this side (payload: the reason, UTF-8).
    CLOSE = 5
    #: Either way: the receiver has taken every frame up to this seq (payload: u64).
    CREDIT = 6
    #: Listener -> dialler: the listener restarted and resumed the connection under a
    #: new epoch; its frames start again after this record.
    REOPEN = 7
    #: Either way: the connection a record was for is unknown here (closed, or this side
    #: restarted without it): the other side must give it up.
    RESET = 8
    #: A stored message, outside any connection (the recipient may not be running):
    #: connection id = the sender's letter session, seq = its place there, payload =
    #: the runtime's sealed message.
    LETTER = 9


@dataclass(slots=True)
class Record:
    """One decoded record."""

    type: RecordType
    from_dialler: bool
    connection: bytes
    epoch: int
    seq: int
    sender: str
    payload: bytes = b""
    #: The inbox the sender reads, when it is not named by its peer id.
    inbox: str = ""
    #: The sender reads no inbox on this medium: nothing can be answered.
    no_reply: bool = False

    @property
    def reply_inbox(self) -> str:
        """Where answers to this record go."""
        return self.inbox or self.sender

    def encode(self) -> bytes:
        """The record as bytes for the medium."""
        sender, inbox = self.sender.encode(), self.inbox.encode()
        flags = (_FROM_DIALLER if self.from_dialler else 0) | (_NO_REPLY if self.no_reply else 0)
        head = HEADER.pack(MAGIC, VERSION, self.type, flags, self.connection, self.epoch,
                           self.seq, len(sender), len(inbox))
        return b"".join((head, sender, inbox, self.payload))


def data_records(from_dialler: bool, connection: bytes, epoch: int, first_seq: int,
                 sender: str, inbox: str, payloads: Sequence[bytes]) -> list[bytes]:
    """DATA records numbered from ``first_seq``, encoded as :meth:`Record.encode` would
    (without a ``Record`` per frame: this is the send path of every message)."""
    sender_bytes, inbox_bytes = sender.encode(), inbox.encode()
    tail, ls, li = sender_bytes + inbox_bytes, len(sender_bytes), len(inbox_bytes)
    flags = _FROM_DIALLER if from_dialler else 0
    pack, kind = HEADER.pack, RecordType.DATA
    return [b"".join((pack(MAGIC, VERSION, kind, flags, connection, epoch, seq, ls, li), tail,
                      payload))
            for seq, payload in enumerate(payloads, first_seq)]


class Unread(bytes):
    """The payload of a record the medium refused unread: empty, but its ``len`` is the
    size it had, so the connection refuses it as too large where a read one would be."""

    size: int

    def __new__(cls, size: int) -> Unread:
        """An unread payload of ``size`` bytes."""
        unread = super().__new__(cls)
        unread.size = size
        return unread

    def __len__(self) -> int:
        return self.size


def is_credit(data: bytes) -> bool:
    """Whether ``data`` has the header of a CREDIT record: what a medium may accept from a
    side channel that anyone can write to without the right to append to inboxes (a
    PostgreSQL notification's payload), where no other record may come from."""
    return len(data) >= HEADER.size and data[:4] == MAGIC and data[5] == RecordType.CREDIT


#: Bytes a record adds to its payload at most: the header, a peer id and an inbox name.
OVERHEAD = HEADER.size + 64 + 96
_TYPES = {int(t): t for t in RecordType}


def decode(data: bytes) -> Record:
    """Parse one record; :class:`ForeignRecord` says why the bytes are not one."""
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise ForeignRecord(f"not a p2phost inbox record ({len(data)} bytes, "
                            f"starting {bytes(data[:8])!r})")
    _, version, kind, flags, connection, epoch, seq, ls, li = HEADER.unpack_from(data)
    if version != VERSION:
        raise ForeignRecord(f"inbox record version {version} (this node reads {VERSION})")
    known = _TYPES.get(kind)
    if known is None:
        raise ForeignRecord(f"unknown inbox record type {kind}")
    middle = HEADER.size + ls
    end = middle + li
    if end > len(data):
        raise ForeignRecord("inbox record shorter than its sender and inbox fields")
    try:
        sender = bytes(data[HEADER.size:middle]).decode()
        inbox = bytes(data[middle:end]).decode()
    except UnicodeDecodeError as exc:
        raise ForeignRecord(f"inbox record sender or inbox is not UTF-8: {exc}") from exc
    return Record(known, bool(flags & _FROM_DIALLER), connection, epoch, seq, sender,
                  bytes(data[end:]), inbox, bool(flags & _NO_REPLY))
