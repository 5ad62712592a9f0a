"""An append-only file of ASCII lines that a killed process loses none of.

The inbox journals (what a listening node finished, which letters it handled) and the
host's replay guard all keep state this way: each change is appended with one unbuffered
``write`` (the kernel has it once ``write`` returns, so a killed process loses none), and
now and then the file is rewritten compactly from what is in memory (staged beside it and
renamed over it, so a crash leaves either the old file or the new one).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

_log = logging.getLogger("p2phost.transport")


class JournalFile:
    """One journal file: :meth:`read` it, :meth:`rewrite` it compactly (which opens it
    for appending), :meth:`append` to it, :meth:`close` it.

    :attr:`lines` counts the lines in the file, so its owner can tell when the appended
    ones outgrow the state they describe and rewrite it. The owner handles ``OSError``.
    """

    def __init__(self, path: Path, what: str = "journal",
                 log: logging.Logger = _log) -> None:
        self.path = path
        #: Names the file in warnings ("ignoring an unreadable journal line").
        self.what = what
        #: Lines in the file now (those rewritten plus those appended since).
        self.lines = 0
        self._log = log
        self._fd = -1

    @property
    def is_open(self) -> bool:
        """Whether appending writes to the file (after :meth:`rewrite`, until :meth:`close`)."""
        return self._fd >= 0

    def read(self, apply: Callable[[list[str]], None]) -> None:
        """Call ``apply`` with the words of every line, in order; a line it cannot take
        (``ValueError``, ``IndexError``, ``KeyError``) is skipped with a warning. A missing
        file has no lines."""
        with contextlib.suppress(FileNotFoundError):
            text = self.path.read_text(encoding="ascii", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    apply(line.split(" "))
                except (ValueError, IndexError, KeyError):
                    self._log.warning("%s:%d: ignoring an unreadable %s line", self.path,
                                      number, self.what)

    def append(self, text: str, lines: int = 1) -> None:
        """Append ``text`` (``lines`` whole lines) in one write; nothing once closed."""
        if self._fd < 0:
            return
        os.write(self._fd, text.encode("ascii"))
        self.lines += lines

    def rewrite(self, lines: Sequence[str]) -> None:
        """Replace the file with ``lines`` (each ending in a newline) and append after them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(self.path.name + ".new")
        staged.write_text("".join(lines), encoding="ascii")
        os.replace(staged, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.lines = len(lines)

    def close(self) -> None:
        """Stop appending. Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
