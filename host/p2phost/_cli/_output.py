"""How the CLI talks to people: one console, and errors as one line without a traceback."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def print_error(message: str, fix: str | None = None) -> None:
    """``error: message`` and, when known, ``fix: command`` on stderr."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    if fix:
        err_console.print(f"[bold]fix:[/] {escape(fix)}", markup=True)
