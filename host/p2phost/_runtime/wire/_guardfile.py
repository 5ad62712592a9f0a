"""The replay guard of sealed frames, kept across restarts (``.p2phost/replay-guard``).

A node remembers the sealed frames it *took* (acknowledged to the medium, so the medium
will not deliver them again) within the replay window, on disk: a frame replayed onto
the medium after the node restarted (an old record copied back, renumbered to fit its
connection) is refused as replayed, and counted. Frames the node read but had not
finished when it stopped are not remembered: the medium delivers them again, and they
are taken then.

The file has one line per taken frame (``T SENDER SESSION COUNTER SEALED_MS``), written
once per event-loop turn for every frame taken in it (before the medium's
acknowledgement, which goes out later), and is compacted into one line per session
(``S SENDER SESSION HIGHEST BITS LAST_MS``) at start and when it grows; sessions idle
for the whole window are dropped, and at most the guard's limit of sessions are kept.
Refusals are counted per reason in ``replay-guard.counts`` (``p2phost inbox stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from p2phost_sdk.inbox import JournalFile

if TYPE_CHECKING:
    from ._sealed import ReplayGuard

log = logging.getLogger("p2phost.node")

#: The file's name in the state directory.
GUARD_NAME = "replay-guard"
_COMPACT_EVERY = 50_000


def counts_path(path: Path) -> Path:
    """Where the refusal counts of the guard file at ``path`` are kept."""
    return path.with_name(path.name + ".counts")


def read_counts(path: Path) -> dict[str, int]:
    """The refusals counted beside the guard file at ``path``, per reason ({} if none)."""
    try:
        data = json.loads(counts_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


class GuardFile:
    """Taken frames on disk, loaded into a :class:`ReplayGuard` at start."""

    def __init__(self, path: Path, taken: ReplayGuard) -> None:
        self.path = path
        #: Only what was taken (the live guard also holds frames read and not finished).
        self.taken = taken
        self.counts = read_counts(path)
        self._file = JournalFile(path, "replay guard", log)
        self._pending: list[str] = []

    def load(self) -> None:
        """Read the file into :attr:`taken` (dropping what left the window), compact it."""
        now = time.time()

        def apply(words: list[str]) -> None:
            kind, sender, session_hex, first, *rest = words
            session = bytes.fromhex(session_hex)
            if kind == "S":
                bits, last = rest
                self.taken.restore(sender, session, int(first), int(bits, 16),
                                   int(last) / 1000, now)
            else:
                self.taken.admit(sender, session, int(first), int(rest[0]) / 1000, now)

        self._file.read(apply)
        self._compact()

    def take(self, sender: str, session: bytes, counter: int, sealed_at: float) -> None:
        """That frame is finished: remember it (written at the end of this loop turn)."""
        self.taken.admit(sender, session, counter, sealed_at, time.time())
        self._pending.append(f"T {sender} {session.hex()} {counter} {int(sealed_at * 1000)}\n")
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write what was taken since the last flush."""
        if not self._pending or not self._file.is_open:
            self._pending.clear()
            return
        lines, self._pending = self._pending, []
        try:
            self._file.append("".join(lines), len(lines))
        except OSError as exc:
            log.warning("cannot write the replay guard %s: %s", self.path, exc)
        if self._file.lines > _COMPACT_EVERY + 2 * len(self.taken.sessions):
            self._compact()

    def refused(self, reason: str) -> None:
        """One more sealed frame refused for ``reason`` (``replayed``, ``altered``...),
        saved at once (refusals are rare)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        with contextlib.suppress(OSError):
            counts_path(self.path).write_text(json.dumps(self.counts))

    def _compact(self) -> None:
        self.taken.expire(time.time())
        lines = [f"S {sender} {session.hex()} {seen.highest} {seen.bits:x} "
                 f"{int(seen.last * 1000)}\n"
                 for (sender, session), seen in self.taken.sessions.items()]
        try:
            self._file.rewrite(lines)
        except OSError as exc:
            log.warning("cannot write the replay guard %s (frames taken now are not "
                        "remembered across a restart): %s", self.path, exc)
            self._file.close()

    def close(self) -> None:
        """Write what is pending and close the file. Idempotent."""
        self.flush()
        self._file.close()
