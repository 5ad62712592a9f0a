"""The ``p2phost`` entry point: ``--version`` answers before anything heavy is imported;
everything else goes to the typer app of ``_app``, except the scripted lifecycle commands
(``plugin install --yes``, ``plugin sync``), which need no option parser and run without
building it. ``plugin install --yes`` first tries to replay the last such install
(``p2phost._replay``), importing next to nothing."""

from __future__ import annotations

import errno
import os
import sys

from .. import __version__

# Not typing.TYPE_CHECKING: the warm install (``_replay``) imports next to nothing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def version_line() -> str:
    """``p2phost X (host-api Y, Python Z)`` without importing the SDK's plugin kinds."""
    return f"p2phost {__version__} (host-api {_host_api()}, Python {sys.version.split()[0]})"


_HOST_API_LINE = 'HOST_API = Version("'


def _host_api() -> str:
    # ``import p2phost_sdk`` loads every plugin kind (~50 ms), and its version module
    # ``packaging`` (~10 ms): the version is read from that module's source instead, when
    # it is laid out as expected (tests/cli/test_startup.py checks it against the SDK).
    sdk = sys.modules.get("p2phost_sdk")
    if sdk is None:
        # What importlib.util.find_spec does, without importing it (and contextlib).
        spec = next((found for finder in sys.meta_path
                     if (found := getattr(finder, "find_spec", lambda *a: None)(
                         "p2phost_sdk", None)) is not None), None)
        for location in (spec.submodule_search_locations or []) if spec else []:
            try:
                with open(f"{location}/_version.py", encoding="utf-8") as source:
                    lines = source.read().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith(_HOST_API_LINE) and line.endswith('")'):
                    return line[len(_HOST_API_LINE):-2]
        from p2phost_sdk import HOST_API

        return str(HOST_API)
    return str(sdk.HOST_API)


def scripted(args: list[str]) -> Callable[[], None] | None:
    """The command ``args`` ask for, when they are one of the forms scripts and CI use that
    need no option parsing: ``plugin install --yes [--refresh] [NAME[SPEC]...]`` (``-y``
    too, anywhere) and ``plugin sync [--offline]``. Anything else (another option, ``--help``, no
    ``--yes``, so a prompt) goes through typer: None.

    Building the typer app costs more than such an install from a warm cache does
    (docs/performance.md); tests/cli/test_startup.py checks both ways print the same.
    """
    if len(args) < 2 or args[0] != "plugin" or os.environ.get("_P2PHOST_COMPLETE"):
        return None
    command, rest = args[1], args[2:]
    flags = {a for a in rest if a.startswith("-")}
    names = [a for a in rest if not a.startswith("-")]
    if command == "install" and flags & {"--yes", "-y"} and flags <= {"--yes", "-y", "--refresh"}:
        from . import _lifecycle

        return lambda: _lifecycle.install(names, yes=True, refresh="--refresh" in flags)
    if command == "sync" and not names and flags <= {"--offline"}:
        from . import _lifecycle

        return lambda: _lifecycle.sync(offline=bool(flags))
    return None


def _replayable(args: list[str]) -> bool:
    """Whether ``args`` are ``plugin install --yes`` (``-y``), maybe ``--refresh``, and
    nothing else: the forms a recorded install may be replayed for (``p2phost._replay``)."""
    flags = set(args[2:])
    return (args[:2] == ["plugin", "install"] and bool(flags & {"--yes", "-y"})
            and flags <= {"--yes", "-y", "--refresh"} and not os.environ.get("_P2PHOST_COMPLETE"))


def _run_scripted(command: Callable[[], None]) -> None:
    """Run ``command`` as typer's root callback and click's standalone mode would."""
    import logging

    from .._observability._logs import configure

    configure(logging.WARNING, "text")
    try:
        command()
    except (EOFError, KeyboardInterrupt):
        sys.stderr.write("\nAborted!\n")
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.EPIPE:  # a closed pipe (``| head``): quietly, as click does
            raise
        sys.exit(1)


def run(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning p2phost errors into one clear message."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(version_line())  # the commonest probes: no click parsing at all
        return
    if args in (["--help"], ["-h"]):
        from ._help import root_help

        sys.stdout.write(root_help())
        return
    debug = "--debug" in args
    if _replayable(args):
        from .._replay import replay

        try:
            if replay(refresh="--refresh" in args):
                return
        except KeyboardInterrupt:  # as _run_scripted ends the full installer's Ctrl-C
            sys.stderr.write("\nAborted!\n")
            sys.exit(1)
        except OSError as exc:  # printing what it did
            if exc.errno != errno.EPIPE:
                raise
            sys.exit(1)
    try:
        if (command := scripted(args)) is not None:
            _run_scripted(command)
            return
        from ._app import app, enable_completion

        if os.environ.get("_P2PHOST_COMPLETE"):
            enable_completion()
        app(args=args, prog_name="p2phost")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from p2phost_sdk import P2PHostError

        from .._errors import UserError
        from ._output import print_error

        if not isinstance(exc, P2PHostError):
            raise
        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, UserError):
            print_error(exc.message, exc.fix)
            sys.exit(exc.exit_code)
        print_error(str(exc))
        sys.exit(1)
