"""The server process of a node's reader connection: ended by the next reader connection
before it frees the inbox's leased rows.

A statement given up at its deadline (the socket shut down) goes on in the server, which
notices the closed socket only when it writes the answer: after its commit. A claim that
committed after the reset of the leased rows would lease rows to nobody (freed by no one
until the next reset). So a new reader connection first ends its predecessor's process
(``pg_terminate_backend``, allowed on a process of one's own role), which cuts such a
claim (its transaction rolls back) or waits for its commit, and waits for it to exit.

The process is named by its pid and when it started (a pid alone is reused), and is
ended only while it is still this inbox's reader: its connection's ``application_name``
names the inbox (a file that names another node's reader, copied or corrupted, ends
nothing there). Noted in a file of the node's state directory, it is also ended after
the node was killed and started again. The file is read and written in a thread
(nothing blocking on the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path

from p2phost_sdk.inbox import MediumUnavailable

from ._guards import ReaderStatements
from ._sql import END_PREVIOUS


class ReaderBackend:
    """The latest reader connection's server process (kept in ``file``, if given)."""

    def __init__(self, file: Path | None = None, name: str = "p2phost reader") -> None:
        self._file = file
        #: The ``application_name`` of the inbox's reader connections.
        self.name = name
        self._pid: int | None = None
        self._started: datetime | None = None
        self._read = file is None

    def _load(self) -> None:
        assert self._file is not None
        with contextlib.suppress(OSError, ValueError):
            pid, started = self._file.read_text().split()
            self._pid, self._started = int(pid), datetime.fromisoformat(started)

    def _note(self, text: str) -> None:
        assert self._file is not None
        # One small write; a torn one (a kill) reads as no process. Not written (a state
        # directory gone read-only): only a restart is not covered.
        with contextlib.suppress(OSError):
            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._file.write_text(text)

    async def end_previous(self, reader: ReaderStatements, wait: float) -> None:
        """End the previous reader connection's server process, if it still runs, and
        wait up to ``wait`` seconds for it to exit (else :class:`MediumUnavailable`);
        then note ``reader``'s."""
        if not self._read:
            await asyncio.to_thread(self._load)
            self._read = True
        rows = await reader.rows(END_PREVIOUS, (round(wait * 1000), self._pid, self._started,
                                                self.name))
        (started, ended), = rows
        if not ended:
            raise MediumUnavailable(
                f"the server process of the previous reader connection (pid {self._pid}) "
                f"did not exit within {wait:g}s of its termination: a claim there may "
                "still lease rows, so they are not freed yet")
        self._pid, self._started = reader.connection.info.backend_pid, started
        if self._file is not None and started is not None:
            await asyncio.to_thread(self._note, f"{self._pid} {started.isoformat()}\n")

    async def forget(self) -> None:
        """Remove the file (the inbox is deleted: no run will read it again)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._file.unlink, missing_ok=True)
