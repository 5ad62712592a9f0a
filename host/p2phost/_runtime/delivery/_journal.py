"""The outbox journal: where an acknowledged ``send()`` makes its message durable.

A send appends one record to a memory-mapped file (``.p2phost/outbox.journal``) and
returns: the bytes are in the page cache the moment they are copied into the mapping,
so they survive the process being killed (SIGKILL, a crash, OOM) at any instant after
that, exactly like a SQLite commit in WAL mode with ``synchronous=NORMAL`` (neither
survives a power cut or an OS crash: docs/delivery.md, section 3). The writer thread
folds the records still unacknowledged into the outbox table of the delivery database in
batches (with the next transaction); a message acknowledged before that never touches
SQLite (an ACK record says so). On start the journal is replayed into the database before
anything is sent.

Why a mapping and not ``write()`` per record (as ``p2phost_sdk.inbox.JournalFile``
does for a broker's finished-letter lines): the house rule is no blocking file I/O on
the event loop. Copying into a mapping is a ``memcpy`` with no system call; the file is
preallocated and mapped with ``MAP_POPULATE`` when the node starts, so appending never
page-faults either. ``JournalFile`` keeps ASCII lines and compacts by rewriting the file,
which binary message bodies and a loop-side writer cannot use.

Layout: two segments of :data:`SEGMENT` bytes. Each starts with a header (magic, the
segment's epoch); records follow, 8-byte aligned: ``epoch u64, length u32, crc32 u32,
payload``, the CRC over the payload seeded with the epoch, so a record torn by a kill,
or left from an earlier epoch, ends the segment. Appends go to the *active* segment.
When the active one is half full and the other is clean, the active one is *sealed*
and the other becomes active with the next epoch (also at each fold); a sealed
segment whose records are all settled (acknowledged, or folded and committed) is
reset. So a sender whose receiver keeps up never writes to SQLite at all; one that
runs more than about a segment ahead has its backlog folded into the database.
Replay reads the segments in epoch order.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from ._store import StoreError

JOURNAL_NAME = "outbox.journal"
#: Bytes per segment (two segments: the file is twice this).
SEGMENT = 2 * 1024 * 1024
_MAGIC = b"P2PJRNL1"
_HEADER = struct.Struct("<8sQ")  # magic, epoch (0: empty)
#: After each header written since journals are marked in the database as they are set
#: up: an earlier build marked one only once it folded, so a journal without this tag
#: and no mark in the database is no sign the database was replaced (unless it holds
#: records). Builds that do not know it ignore it (the bytes up to _START are free).
_MARKED = b"P2PMARK1"
_RECORD = struct.Struct("<QII")  # epoch, payload length, crc32
_START = 64  # the first record's offset in a segment


def _aligned(size: int) -> int:
    return (size + 7) & ~7


def _allocate(fd: int, size: int, *, fresh: bool) -> None:
    """Give the file its blocks now: a write through the mapping to a block the disk
    cannot provide would kill the process (SIGBUS), where this fails at start. A file
    already there is allocated too (a copy or a restore may have made it sparse):
    ``posix_fallocate`` keeps what a file holds; zeros are written only into a new one."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
    except AttributeError:  # not on this system; otherwise not on this file system
        pass
    if not fresh:
        return  # its blocks cannot be checked here; zeros would overwrite its records
    zeros = bytes(1 << 20)
    for start in range(0, size, len(zeros)):
        os.pwrite(fd, zeros[:size - start], start)


def known_to_database(path: Path, segment: int = SEGMENT) -> bool:
    """Whether the database beside the journal file at ``path`` must know it (have its
    ``journal_mark`` row: docs/delivery.md, section 3): it holds a record (a segment in
    use whose first record reads), or this build set it up (it marks a journal in the
    database as it sets it up). A missing, empty or never-written file need not be
    known, nor one an earlier build only set up (it set its journal up at every start
    but marked it only once it folded: a node that never sent left no mark)."""
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size != 2 * segment:
                return False
            for index in (0, 1):
                file.seek(index * segment)
                magic, epoch, tag = struct.unpack("<8sQ8s", file.read(_HEADER.size + 8))
                if magic != _MAGIC:
                    continue
                if tag == _MARKED:
                    return True
                if not epoch:
                    continue
                file.seek(index * segment + _START)
                got, length, crc = _RECORD.unpack(file.read(_RECORD.size))
                if got == epoch and _START + _RECORD.size + length <= segment \
                        and zlib.crc32(file.read(length), epoch & 0xFFFFFFFF) == crc:
                    return True
    except OSError:
        return False
    return False


class JournalCorrupt(StoreError):
    """The journal file is damaged in a way a kill cannot explain."""


class Journal:
    """The two-segment journal file, mapped (see the module's docstring)."""

    def __init__(self, path: Path, segment: int = SEGMENT, *, used: bool = False) -> None:
        """``used``: the database beside it says this journal was in use (it may hold
        records not folded into the database yet), so an empty file is not a new one."""
        self.path = path
        self.segment = segment
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A missing one was moved aside (what its errors say to do): made anew.
            used = used and path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the journal {path}: {exc}") from exc
        try:
            # One node per journal: a second one (another `p2phost run` of the project,
            # an embedded node) would replay it and start it afresh under the first.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"{path} is in use by another node of this project (a node keeps its "
                f"journal locked while it runs): {exc}.\nfix: stop the other node first, "
                "or give this one a project of its own") from exc
        size = 0
        try:
            size = os.fstat(fd).st_size
            if size not in (0, 2 * segment):
                raise JournalCorrupt(
                    f"{path} is {size} bytes, not a journal of {2 * segment}: it is damaged "
                    f"or not p2phost's.\nfix: stop the node and move {path} aside (messages "
                    "sent but not yet acknowledged that it held are then not sent)")
            if size == 0 and used:
                # p2phost never empties a journal it used: something else did (`: > file`,
                # a failed copy), and what only it held would be lost without a word.
                raise JournalCorrupt(
                    f"{path} is empty, but the delivery database beside it says this "
                    "journal was in use: what it held and the database does not yet "
                    "(messages sent but not yet acknowledged, or handlers' outcomes) is "
                    f"lost.\nfix: put back a copy of {path} if you have one; otherwise "
                    f"stop the node and move {path} aside to start without what it held")
            _allocate(fd, 2 * segment, fresh=size == 0)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            self._map = mmap.mmap(fd, 2 * segment, flags=flags)
        except BaseException as exc:
            if size == 0:  # never leave a part-allocated file that reads as damaged
                os.ftruncate(fd, 0)
            os.close(fd)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot set up the journal {path} ({2 * segment} bytes): "
                                 f"{exc} (is the disk full?)") from exc
            raise
        #: Held open while the node runs: the lock lives as long as it.
        self._fd = fd
        try:
            self._epochs = [self._epoch_of(0), self._epoch_of(1)]
        except BaseException:
            self.close()  # unlocked: the user moves it aside, a `doctor` looks again
            raise
        # Epochs only grow: a record left from an earlier one never reads as valid.
        self._last = max(self._epochs)
        #: Records of each segment not settled yet.
        self.open = [0, 0]
        self.active = 0 if self._epochs[0] >= self._epochs[1] else 1
        self._end = [_START, _START]

    def _epoch_of(self, index: int) -> int:
        magic, epoch = _HEADER.unpack_from(self._map, index * self.segment)
        if magic == _MAGIC:
            return int(epoch)
        base = index * self.segment
        if magic == b"\0" * 8 and epoch == 0 \
                and self._map[base:base + self.segment] == bytes(self.segment):
            return 0  # never used (a reset segment keeps its magic)
        raise JournalCorrupt(
            f"{self.path}: segment {index} has no journal header"
            f"{' but records follow it' if magic == bytes(8) else ''}: the file is damaged.\n"
            f"fix: stop the node and move {self.path} aside (messages sent but not yet "
            "acknowledged that it held are then not sent)")

    # -- replay ----------------------------------------------------------------------

    def replay(self) -> Iterator[bytes]:
        """The payloads of every record, oldest segment first. A record torn by a kill
        ends its segment; a damaged one with valid records after it is an error."""
        for index in sorted((0, 1), key=lambda i: self._epochs[i]):
            epoch = self._epochs[index]
            if epoch:
                yield from self._records(index, epoch)

    def _records(self, index: int, epoch: int) -> Iterator[bytes]:
        base, data = index * self.segment, self._map
        offset = _START
        while offset + _RECORD.size <= self.segment:
            got, length, crc = _RECORD.unpack_from(data, base + offset)
            start = base + offset + _RECORD.size
            end = start + length
            if got != epoch or end > base + self.segment \
                    or zlib.crc32(data[start:end], epoch & 0xFFFFFFFF) != crc:
                self._check_tail(index, epoch, offset)
                break
            yield bytes(data[start:end])
            offset = _aligned(end - base)
        self._end[index] = offset

    def _check_tail(self, index: int, epoch: int, bad: int) -> None:
        """A record that does not read is the end, unless a valid record of the same
        epoch follows it (a kill tears only the last one: something else damaged it)."""
        base, data = index * self.segment, self._map
        tag = struct.pack("<Q", epoch)
        at = data.find(tag, base + bad + 8, base + self.segment)
        while at >= 0:
            if (at - base) % 8 == 0 and at - base + _RECORD.size <= self.segment:
                _, length, crc = _RECORD.unpack_from(data, at)
                start = at + _RECORD.size
                if start + length <= base + self.segment \
                        and zlib.crc32(data[start:start + length], epoch & 0xFFFFFFFF) == crc:
                    raise JournalCorrupt(
                        f"{self.path}: the record at offset {base + bad} is damaged and valid "
                        f"records follow it (a kill damages only the last one).\nfix: stop "
                        f"the node and move {self.path} aside; the messages it held that were "
                        "not yet acknowledged are then not sent (send them again)")
            at = data.find(tag, at + 8, base + self.segment)

    def restart(self) -> None:
        """After a replay was committed to the database: both segments empty."""
        for index in (0, 1):
            self._reset(index)
        self.active = 0
        self._begin(0)

    # -- appending -------------------------------------------------------------------

    def append(self, payload: bytes, *, counted: bool = True) -> int | None:
        """Append one record; the segment it went to, or None when it does not fit (the
        caller stores the message another way). A ``counted`` record stays open until
        :meth:`settled`."""
        index = self.active
        offset = self._end[index]
        end = offset + _RECORD.size + len(payload)
        if end > self.segment:
            return None
        epoch = self._epochs[index]
        # One copy: a kill in the middle of it leaves a record whose CRC fails.
        self._map[index * self.segment + offset:index * self.segment + end] = _RECORD.pack(
            epoch, len(payload), zlib.crc32(payload, epoch & 0xFFFFFFFF)) + payload
        self._end[index] = _aligned(end)
        if counted:
            self.open[index] += 1
        return index

    def crowded(self) -> bool:
        """Whether it is time to fold: the active segment is half full and the other
        cannot take over (it still holds unsettled records); when it can, it does."""
        return self._end[self.active] > self.segment // 2 and not self.seal()

    def settled(self, index: int, count: int = 1) -> None:
        """``count`` records of segment ``index`` are settled (acknowledged, or folded
        and committed); an emptied segment is reset when nothing else depends on it."""
        self.open[index] -= count
        self._tidy()

    def seal(self) -> bool:
        """At a fold: make the other segment active if it is clean (the records of the
        sealed one are then all settled once the fold commits); whether it switched."""
        other = 1 - self.active
        if self._epochs[other] or self._end[self.active] == _START:
            return False
        self.active = other
        self._begin(other)
        return True

    def _tidy(self) -> None:
        active, other = self.active, 1 - self.active
        if self._epochs[other] and self.open[other] == 0:
            self._reset(other)  # its ACK records may refer to it, never the other way
        if not self._epochs[other] and self.open[active] == 0 \
                and self._end[active] > _START:
            self._reset(active)  # all settled: start it afresh, in place
            self._begin(active)

    def _begin(self, index: int) -> None:
        self._last += 1
        epoch = self._epochs[index] = self._last
        self._end[index] = _START
        self._header(index, epoch)

    def _reset(self, index: int) -> None:
        self._epochs[index] = 0
        self._end[index] = _START
        self.open[index] = 0
        self._header(index, 0)

    def _header(self, index: int, epoch: int) -> None:
        self._map[index * self.segment:index * self.segment + _HEADER.size + len(_MARKED)] = \
            _HEADER.pack(_MAGIC, epoch) + _MARKED

    def close(self) -> None:
        """Unmap and unlock (what was appended stays in the file)."""
        self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
