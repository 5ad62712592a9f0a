"""The ``p2phost`` command: a typer app whose groups live in sibling modules."""

from __future__ import annotations

import logging
import sys
import traceback

import typer

from p2phost_sdk import P2PHostError

from .. import __version__
from .._errors import UserError
from . import authoring, dead, inbox, keys, node, plugin, project, registry, trust
from ._output import print_error

app = typer.Typer(
    help="p2phost: run a peer-to-peer messaging node whose parts are versioned plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from p2phost_sdk import HOST_API

        typer.echo(f"p2phost {__version__} (host-api {HOST_API}, Python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """p2phost: run a peer-to-peer messaging node whose parts are versioned plugins."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _module in (project, node, plugin, authoring, keys, registry, dead, trust, inbox):
    _module.register(app)


def run(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning p2phost errors into one clear message."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="p2phost")
    except P2PHostError as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, UserError):
            print_error(exc.message, exc.fix)
            sys.exit(exc.exit_code)
        print_error(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
