"""The delivery journal: what a listening node finished, kept on disk across a crash.

For every connection this node accepted, the journal holds the dialler's first frame
(its hello, replayed to the node's next run to resume the connection) and which frames
the node is done with. A record done but not yet acknowledged on the medium when the node
was killed comes again after the restart; the journal is how the new run knows to skip
it, so an app handles it once. Lines are appended with one unbuffered ``write`` each
(a killed process loses none); the file is rewritten compactly now and then
(:class:`JournalFile`).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._journalfile import JournalFile

log = logging.getLogger("p2phost.transport")

#: Connections not resumed for this long are forgotten (their dialler is long gone).
MAX_AGE = 24 * 3600.0


@dataclass
class DoneSet:
    """Sequence numbers done: everything up to ``watermark``, and ``above`` it."""

    watermark: int = 0
    above: set[int] = field(default_factory=set)

    def add(self, seq: int) -> None:
        """Mark ``seq`` done."""
        if seq <= self.watermark:
            return
        self.above.add(seq)
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)

    def __contains__(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self.above


@dataclass
class Resumable:
    """An accepted connection as the journal knows it."""

    connection: bytes
    sender: str
    #: The inbox the dialler reads.
    inbox: str
    epoch: int
    opening: bytes
    done: DoneSet = field(default_factory=DoneSet)
    opened: float = field(default_factory=time.time)


class Journal:
    """The journal file of one inbox; every method is synchronous (no await inside)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.live: dict[bytes, Resumable] = {}
        self._file = JournalFile(path, "journal", log)

    def load(self) -> dict[bytes, Resumable]:
        """Read the journal (dropping what is too old or unreadable), compact it, and
        return the connections a new run may resume."""
        self.live = {}
        self._file.read(self._apply)
        cutoff = time.time() - MAX_AGE
        self.live = {c: r for c, r in self.live.items() if r.opened >= cutoff}
        self._compact()
        return dict(self.live)

    def _apply(self, words: list[str]) -> None:
        kind, connection = words[0], bytes.fromhex(words[1])
        if kind == "O":
            entry = Resumable(connection, words[3], words[4], int(words[2]),
                              base64.b64decode(words[6], validate=True), opened=float(words[5]))
            earlier = self.live.get(connection)
            if earlier is not None:  # resumed after a restart: what was done stays done
                entry.done = earlier.done
            self.live[connection] = entry
        elif kind == "D":
            self.live[connection].done.add(int(words[2]))
        elif kind == "W":
            self.live[connection].done.watermark = int(words[2])
        elif kind == "C":
            self.live.pop(connection, None)

    def _write(self, line: str) -> None:
        if not self._file.is_open:
            return  # closed: the endpoint is gone, and the medium will redeliver
        self._file.append(line)
        if self._file.lines > 10_000 + 4 * len(self.live):
            self._compact()

    def _compact(self) -> None:
        now = time.time()
        lines = []
        for entry in self.live.values():
            entry.opened = now
            lines.append(self._open_line(entry))
            lines.append(f"W {entry.connection.hex()} {entry.done.watermark}\n")
            lines.extend(f"D {entry.connection.hex()} {seq}\n" for seq in sorted(entry.done.above))
        self._file.rewrite(lines)

    @staticmethod
    def _open_line(entry: Resumable) -> str:
        opening = base64.b64encode(entry.opening).decode("ascii")
        return (f"O {entry.connection.hex()} {entry.epoch} {entry.sender} {entry.inbox} "
                f"{entry.opened:.0f} {opening}\n")

    def opened(self, entry: Resumable) -> None:
        """A connection was accepted (or resumed) and its opening frame arrived."""
        entry.opened = time.time()
        self.live[entry.connection] = entry
        self._write(self._open_line(entry))

    def done(self, connection: bytes, seq: int) -> None:
        """The node is done with frame ``seq`` of ``connection``."""
        entry = self.live.get(connection)
        if entry is not None and seq not in entry.done:
            entry.done.add(seq)
            self._write(f"D {connection.hex()} {seq}\n")

    def closed(self, connection: bytes) -> None:
        """The connection ended and every frame of it is done: forget it."""
        if self.live.pop(connection, None) is not None:
            self._write(f"C {connection.hex()}\n")

    def close(self) -> None:
        """Close the file. Idempotent."""
        self._file.close()
