"""The ``p2phost`` typer app, whose commands load only when they run.

Every command lives in a sibling module with a ``register(app)`` function. ``COMMANDS`` (in
``_help``) maps each top-level name to the modules that register it and its one-line help,
so ``p2phost --help`` lists every command without importing any of them, and ``p2phost
ping`` imports the node runtime but not the installer. To add a command: write
``_cli/NAME.py`` with ``register(app)`` and add one line to ``COMMANDS``
(``tests/cli/test_startup.py`` checks that every such module is listed there, and that the
line's help is the command's own).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from ._help import COMMANDS, OPTIONS, SUMMARY
from .main import version_line

CONTEXT = {"help_option_names": ["-h", "--help"]}


def command_group(help: str, **settings: Any) -> typer.Typer:
    """A typer app for a command group, its help text printed as written: typer's default
    reads it as rich markup, which takes a TOML table such as ``[trust]`` for a style and
    drops it."""
    return typer.Typer(help=help, rich_markup_mode=None, **settings)


class LazyGroup(TyperGroup):
    """The root group: lists ``COMMANDS`` from the table, imports one only to run it."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def load_command(name: str) -> Any:
    """Import the modules that register ``name`` and return its click command."""
    scratch = typer.Typer(context_settings=CONTEXT, rich_markup_mode=None)
    for module in COMMANDS[name][0]:
        importlib.import_module(f"{__package__}.{module}").register(scratch)
    group = typer.main.get_group(scratch)
    command = group.commands.get(name)
    if command is None:
        raise LookupError(f"p2phost._cli: {COMMANDS[name][0]} registered no command {name!r}")
    return command


app = typer.Typer(
    cls=LazyGroup,
    help=SUMMARY,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)


def enable_completion() -> None:
    """Register typer's bash/zsh/fish completion answers, when a shell asks for them
    (``_P2PHOST_COMPLETE`` is set by the scripts ``p2phost completion SHELL`` prints)."""
    from typer._completion_classes import completion_init

    completion_init()


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help=OPTIONS["--version"]),
    debug: bool = typer.Option(False, "--debug", help=OPTIONS["--debug"]),
    log_format: str = typer.Option("text", "--log-format", metavar="FORMAT",
                                   show_default=False, help=OPTIONS["--log-format FORMAT"]),
) -> None:
    """p2phost: run a peer-to-peer messaging node whose parts are versioned plugins."""
    import logging

    from .._observability._logs import FORMATS, configure

    if log_format not in FORMATS:
        raise typer.BadParameter(f"{log_format!r} is not one of {', '.join(FORMATS)}",
                                 param_hint="--log-format")
    configure(logging.DEBUG if debug else logging.WARNING, log_format)


