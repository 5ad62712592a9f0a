"""How the CLI talks to people: one console, and errors as one line without a traceback.

The consoles are rich ``Console`` objects made on first need. Plain text printed to a pipe
or a file (scripts, CI) is written directly: rich would print it unchanged, and importing
rich costs more than a whole ``plugin install`` from a warm cache does without it.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

from .._redact import redact

if TYPE_CHECKING:
    from rich.console import Console

#: Text rich prints unchanged: no control codes or tabs (rich strips or expands them), and
#: nothing like an emoji code between colons (``:name:`` becomes the emoji).
_PLAIN = re.compile(r"[^\x00-\x09\x0b-\x1f\x7f]*")
_EMOJI_LIKE = re.compile(r":[\w+\-!#&*().\u2019]+:")
#: Variables with which rich may treat a pipe as a terminal (https://force-color.org/).
_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE")


class Output:
    """A rich console for stdout or stderr, made only when something needs rich."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        """The rich console (for tables, markup, progress bars)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.stderr, highlight=False, soft_wrap=True,
                                    markup=False)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """Whether output goes to a terminal (as rich decides it)."""
        if self._console is not None or any(k in os.environ for k in _FORCING):
            return self.rich.is_terminal
        isatty = getattr(self._stream(), "isatty", None)
        try:
            return bool(isatty is not None and isatty())
        except ValueError:  # a closed stream
            return False

    def print(self, *objects: Any, **options: Any) -> None:
        """Print as ``rich.console.Console.print`` does; a password in an address in text
        is left out (docs/transports.md: passwords are never printed)."""
        objects = tuple(redact(o) if isinstance(o, str) else o for o in objects)
        if len(objects) == 1 and isinstance(objects[0], str) and not options.get("markup") \
                and options.keys() <= {"markup"} and plain(objects[0]) \
                and not self.is_terminal:
            stream = self._stream()
            stream.write(objects[0] + "\n")
            stream.flush()
            return
        self.rich.print(*objects, **options)

    def status(self, *args: Any, **kwargs: Any) -> Any:
        """A spinner while something runs (``Console.status``)."""
        return self.rich.status(*args, **kwargs)

    def _stream(self) -> Any:
        # Looked up on every print, as rich does: tests and callers may swap sys.stdout.
        return sys.stderr if self.stderr else sys.stdout


def plain(text: str) -> bool:
    """Whether rich would print ``text`` unchanged (no markup, emoji codes, control codes)."""
    return _PLAIN.fullmatch(text) is not None and _EMOJI_LIKE.search(text) is None


console = Output()
err_console = Output(stderr=True)


def print_error(message: str, fix: str | None = None) -> None:
    """``error: message`` and, when known, ``fix: command`` on stderr (passwords removed:
    errors quote the addresses they are about)."""
    from rich.markup import escape

    message, fix = redact(message), (redact(fix) if fix else fix)

    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    if fix:
        err_console.print(f"[bold]fix:[/] {escape(fix)}", markup=True)


def confirm(question: str, yes: bool, doing: str, *, default: bool = False) -> None:
    """Ask ``question`` on a terminal; without one, only ``--yes`` goes ahead (a script
    that did not say yes must not get a prompt that reads EOF and a bare ``Aborted!``).
    ``doing`` names the change in the refusal, e.g. ``purging the inbox``."""
    from .._errors import UserError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{doing} needs a confirmation, and there is no terminal to ask on",
                        fix="re-run with --yes")
    import typer  # only a person at a terminal is asked: the fast path never gets here

    if not typer.confirm(question, default=default):
        raise typer.Exit(1)
