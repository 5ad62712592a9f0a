"""Letters: records stored for a peer without a connection (it may not be running).

A letter is one LETTER record: no OPEN, no ACCEPT, no flow control. Its connection id
names the sender's *letter session* and its seq counts letters in that session, so the
receiver can tell a letter it already finished from a new one. The payload is the
runtime's (sealed to the recipient and signed by the sender); this package only carries
it, keeps it in order, and remembers what was finished across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._journal import DoneSet
from ._journalfile import JournalFile

log = logging.getLogger("p2phost.transport")

#: Letter sessions not heard from for this long are forgotten (7 days: the default
#: effectively-once dedupe window; a letter sealed before it is refused as stale).
LETTER_MAX_AGE = 7 * 24 * 3600.0


@dataclass(slots=True)
class Letter:
    """One letter taken from this node's inbox, for the runtime to open and handle."""

    #: The sender's peer id, as the record names it (the sealed payload must prove it).
    sender: str
    #: The inbox answers go to; None: the sender has no inbox (a pure producer).
    reply_inbox: str | None
    #: The sender's letter session (16 bytes) and this letter's place in it (from 1).
    session: bytes
    seq: int
    payload: bytes
    #: The medium's public URL (``redis://HOST:PORT/DB``).
    medium: str
    _finish: Callable[[Letter, str | None], None] = field(repr=False, default=lambda *_: None)
    _finished: bool = field(repr=False, default=False)

    def done(self) -> None:
        """The node is done with the letter: remember it, and let the medium forget it."""
        if not self._finished:
            self._finished = True
            self._finish(self, None)

    def reject(self, reason: str) -> None:
        """Refuse the letter (altered, forged, stale): counted, and the medium forgets it."""
        if not self._finished:
            self._finished = True
            self._finish(self, reason)


#: Called with each new letter of an inbox, in order; awaiting it is backpressure.
LetterHandler = Callable[[Letter], Awaitable[None]]


#: Seconds a handled letter's count may wait before it is written beside the journal.
COUNTS_DELAY = 1.0


@dataclass
class _Session:
    done: DoneSet = field(default_factory=DoneSet)
    last: float = field(default_factory=time.time)


class LetterJournal:
    """Which letters of an inbox are finished, on disk: one unbuffered line per letter,
    so a node killed right after handling one does not handle it again."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sessions: dict[tuple[str, bytes], _Session] = {}
        #: Letters handled, rejected (altered, forged, stale) and skipped as copies, over
        #: every run: ``p2phost inbox stats`` shows them.
        self.counts: dict[str, int] = read_counts(path)
        self._file = None if path is None else JournalFile(path, "letter journal", log)
        self._saving: asyncio.TimerHandle | None = None

    def count(self, kind: str, number: int = 1) -> None:
        """``number`` more letters of ``kind``; all but handled ones are saved at once
        (they are rare); handled ones within :data:`COUNTS_DELAY` seconds, in one write
        however many there were, so ``p2phost inbox stats`` shows a running node's."""
        self.counts[kind] = self.counts.get(kind, 0) + number
        if kind != "handled":
            self.save_counts()
        elif self._saving is None and self.path is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a tool reading the journal): saved at close
            self._saving = loop.call_later(COUNTS_DELAY, self.save_counts)

    def save_counts(self) -> None:
        """Write the counts beside the journal."""
        if self._saving is not None:
            self._saving.cancel()
            self._saving = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                counts_path(self.path).write_text(json.dumps(self.counts))

    def load(self) -> None:
        """Read the journal (dropping sessions older than :data:`LETTER_MAX_AGE`)."""
        if self._file is None:
            return
        self._file.read(self._apply)
        self._compact()

    def _apply(self, words: list[str]) -> None:
        kind, sender, session, value, when = words
        entry = self.sessions.setdefault((sender, bytes.fromhex(session)), _Session(last=0.0))
        entry.last = max(entry.last, float(when))
        if kind == "W":
            entry.done.watermark = max(entry.done.watermark, int(value))
        else:
            entry.done.add(int(value))

    def seen(self, sender: str, session: bytes, seq: int) -> bool:
        """Whether that letter was finished already."""
        entry = self.sessions.get((sender, session))
        return entry is not None and seq in entry.done

    def done(self, sender: str, session: bytes, seq: int) -> None:
        """That letter is finished."""
        entry = self.sessions.setdefault((sender, session), _Session())
        entry.last = now = time.time()
        entry.done.add(seq)
        if self._file is not None and self._file.is_open:
            self._file.append(f"D {sender} {session.hex()} {seq} {now:.0f}\n")
            if self._file.lines > 10_000 + 4 * len(self.sessions):
                self._compact()

    def _compact(self) -> None:
        cutoff = time.time() - LETTER_MAX_AGE
        self.sessions = {k: s for k, s in self.sessions.items() if s.last >= cutoff}
        if self._file is None:
            return
        lines = []
        for (sender, session), entry in self.sessions.items():
            head = f"{sender} {session.hex()}"
            lines.append(f"W {head} {entry.done.watermark} {entry.last:.0f}\n")
            lines.extend(f"D {head} {seq} {entry.last:.0f}\n" for seq in sorted(entry.done.above))
        self._file.rewrite(lines)

    def close(self) -> None:
        """Close the file (saving the counts). Idempotent."""
        self.save_counts()
        if self._file is not None:
            self._file.close()


def counts_path(journal: Path) -> Path:
    """Where the counts of the letter journal at ``journal`` are kept."""
    return journal.with_suffix(".counts")


def read_counts(journal: Path | None) -> dict[str, int]:
    """The counts saved beside ``journal`` ({} if none)."""
    if journal is None:
        return {}
    try:
        data = json.loads(counts_path(journal).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def letter_finisher(journal: LetterJournal, ack: Callable[[list[Any]], None],
                    token: Any) -> Callable[[Letter, str | None], None]:
    """What ``Letter.done``/``reject`` do for a letter taken with ``token``."""
    def finish(letter: Letter, reason: str | None) -> None:
        if reason is None:
            journal.done(letter.sender, letter.session, letter.seq)
            journal.count("handled")
        else:
            journal.count("rejected")
            log.warning("rejected a stored record from %s on %s: %s", letter.sender,
                        letter.medium, reason)
        ack([token])
    return finish
