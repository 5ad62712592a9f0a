"""Help text is printed as written: typer renders a command group's help as rich markup,
which takes a TOML table such as ``[registry]`` for a style and drops it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from p2phost._cli._app import app, load_command
from p2phost._cli._help import COMMANDS


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(where, command) of ``command`` and its subcommands."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():  # typer's own click
        yield from _commands(sub, f"{path} {name}")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_help_text_is_lost_to_rich_markup(name: str) -> None:
    """Every command's help is printed as plain text (``rich_markup_mode=None``), so a
    ``[table]`` in it stays; before, ``trust --help`` said "( in p2phost.toml)"."""
    for where, command in _commands(load_command(name), name):
        assert getattr(command, "rich_markup_mode", None) is None, where


def test_a_toml_table_in_help_is_printed() -> None:
    result = CliRunner().invoke(app, ["trust", "--help"], terminal_width=100)
    assert "([trust] in p2phost.toml)" in result.output
    result = CliRunner().invoke(app, ["plugin", "install", "--help"], terminal_width=100)
    assert "[registry] require-signed" in " ".join(result.output.split())
