"""The ``p2phost`` entry point: ``--version`` answers before anything heavy is imported;
everything else goes to the typer app of ``_app``."""

from __future__ import annotations

import os
import sys

from .. import __version__


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
    try:
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
