"""Several inbox records in one core NATS message.

A batch is ``p2pN`` followed by each record after its length (4 bytes, big-endian).
nats-py then spends one publish, one parse and one callback on a burst instead of one
per record. Only a reader that answered the inbox probe with :data:`BATCHES_WELCOME`
is sent batches; any reader still takes single records (a record never starts with
``p2pN``: records start with ``p2pI``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

__all__ = ["BATCHES_WELCOME", "BATCH_MAGIC", "batch", "unbatch"]

log = logging.getLogger("p2phost.transport.nats")
#: What a reader answers a probe with: it takes batches.
BATCHES_WELCOME = b"batch"
BATCH_MAGIC = b"p2pN"


def batch(records: Sequence[bytes], limit: int) -> list[bytes]:
    """``records`` in as few NATS messages of at most ``limit`` bytes as fit, in order
    (a record too large to share a message goes alone, as it is)."""
    out: list[bytes] = []
    chunk = bytearray(BATCH_MAGIC)
    for record in records:
        size = len(record)
        if 8 + size > limit:
            if len(chunk) > 4:
                out.append(bytes(chunk))
                chunk = bytearray(BATCH_MAGIC)
            out.append(record)
            continue
        if len(chunk) + 4 + size > limit:
            out.append(bytes(chunk))
            chunk = bytearray(BATCH_MAGIC)
        chunk += size.to_bytes(4, "big")
        chunk += record
    if len(chunk) > 4:
        out.append(bytes(chunk))
    return out


def unbatch(data: bytes) -> list[bytes]:
    """The records of a batch (a truncated tail is dropped: a lost record, which the
    connection's sequence numbers notice)."""
    records: list[bytes] = []
    at, end = 4, len(data)
    while at + 4 <= end:
        size = int.from_bytes(data[at:at + 4], "big")
        at += 4
        if at + size > end:
            log.debug("a batch from NATS ends inside a record: the rest is dropped")
            break
        records.append(data[at:at + size])
        at += size
    return records
