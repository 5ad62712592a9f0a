"""The ``p2phost`` entry point: ``--version`` answers before anything heavy is imported;
everything else goes to the typer app of ``_app``."""

from __future__ import annotations

import os
import sys
import traceback

from .. import __version__


def version_line() -> str:
    """``p2phost X (host-api Y, Python Z)`` without importing the SDK's plugin kinds."""
    return f"p2phost {__version__} (host-api {_host_api()}, Python {sys.version.split()[0]})"


def _host_api() -> str:
    # ``import p2phost_sdk`` loads every plugin kind (~50 ms); the version alone is one
    # small module, loaded on its own when the package is not imported yet.
    sdk = sys.modules.get("p2phost_sdk")
    if sdk is None:
        import importlib.util

        spec = importlib.util.find_spec("p2phost_sdk")
        locations = list(spec.submodule_search_locations or []) if spec else []
        try:
            version_spec = importlib.util.spec_from_file_location(
                "_p2phost_sdk_version", f"{locations[0]}/_version.py")
            assert version_spec is not None and version_spec.loader is not None
            module = importlib.util.module_from_spec(version_spec)
            version_spec.loader.exec_module(module)
            return str(module.HOST_API)
        except Exception:  # laid out otherwise (IndexError, ImportError...): ask the package
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
            traceback.print_exc()
        if isinstance(exc, UserError):
            print_error(exc.message, exc.fix)
            sys.exit(exc.exit_code)
        print_error(str(exc))
        sys.exit(1)
