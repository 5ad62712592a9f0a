"""``p2phost registry``: serve the marketplace, seed it, create publishing tokens.

Heavy imports (the registry package, starlette, uvicorn) happen inside the commands so
that ``p2phost --help`` stays fast.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import typer

from .. import __version__
from ._app import command_group
from ._output import console, err_console
from .registry_access import register_access

#: Where the store lives when --data is not given (overridable by P2PHOST_REGISTRY_DATA).
DEFAULT_DATA = Path(os.environ.get("P2PHOST_REGISTRY_DATA", "~/.p2phost/registry"))

_DATA = typer.Option(DEFAULT_DATA, "--data", help="The store's directory (files, SQLite).")
_DATABASE = typer.Option(
    None, "--database", help="postgresql://HOST/DB to keep the metadata in PostgreSQL."
)


def _data_dir(data: Path) -> Path:
    return data.expanduser()


def _existing_store(data: Path, *, create: bool = False, database: str | None = None) -> Path:
    """``--data`` of a command that uses a store: it must hold a registry (a typo would
    otherwise make an empty registry and serve or change that), unless ``create``
    (``serve --create``; ``seed`` always creates: it is how a registry is made)."""
    from p2phost_registry import is_store

    from .._errors import UserError

    path = _data_dir(data)
    make = (f"p2phost registry seed --data {path} (the official plugins), or p2phost "
            f"registry serve --create --data {path} (empty)")
    if path.exists() and not path.is_dir():
        raise UserError(f"no registry at {path}: --data names a file, not a directory",
                        fix="give the registry's directory to --data")
    if create or is_store(path, database):
        return path
    if path.is_dir():
        raise UserError(f"no registry at {path}: the --data directory exists but is not a "
                        "registry (no files/ and registry.sqlite3 in it)",
                        fix=f"check the path; to make a registry in a new directory: {make}")
    raise UserError(f"no registry at {path}: the --data directory does not exist",
                    fix=f"check the path; to make a registry there: {make}")


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command group to ``app``."""
    group = command_group("Run and fill a plugin registry.", no_args_is_help=True)
    tokens = command_group("Publishing tokens.", no_args_is_help=True)
    group.add_typer(tokens, name="token")
    app.add_typer(group, name="registry")
    register_access(group, tokens, _DATA, _DATABASE, _existing_store)

    @group.callback()
    def needs_server() -> None:
        """Run and fill a plugin registry (needs p2phost-registry installed)."""
        if importlib.util.find_spec("p2phost_registry") is None:
            err_console.print("error: p2phost registry needs the registry server, which is not "
                              "installed: pip install 'p2phost[registry]'", markup=False)
            raise typer.Exit(2)

    @group.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8470, "--port", help="Port to listen on; 0 picks a free one."),
        data: Path = _DATA,
        database: str | None = _DATABASE,
        max_upload_mb: float = typer.Option(20.0, "--max-upload-mb",
                                            help="Largest file accepted, in MiB."),
        public_url: str | None = typer.Option(
            None, "--public-url", metavar="URL",
            help="The address users reach (shown in pages); default: the one listened on."),
        forwarded_allow_ips: str | None = typer.Option(
            None, "--forwarded-allow-ips", metavar="IPS",
            help="Proxies whose X-Forwarded-For names the client (comma-separated)."),
        page_ttl: float = typer.Option(
            60.0, "--page-ttl", metavar="SECONDS",
            help="How long a rendered page is served before download counts refresh it."),
        workers: int = typer.Option(1, "--workers", help="Processes sharing the port."),
        create: bool = typer.Option(False, "--create",
                                    help="Make an empty registry if --data does not exist "
                                         "(else refused: a mistyped path would serve an "
                                         "empty one)."),
        watch_interval: float = typer.Option(
            1.0, "--watch-interval", metavar="SECONDS", min=0.001,
            help="How often to look for changes made by other servers; on PostgreSQL they "
                 "arrive at once through LISTEN/NOTIFY and this is only the safety net."),
    ) -> None:
        """Serve the registry: JSON API, /simple/ index and web marketplace.

        Several servers may share one --database (PostgreSQL) and one --data directory.
        """
        from p2phost_registry import ListenFailed
        from p2phost_registry import serve as run_server

        from .._errors import UserError

        try:
            run_server(host, port, _existing_store(data, create=create, database=database),
                       database, int(max_upload_mb * 1024 * 1024),
                       public_url=public_url, forwarded_allow_ips=forwarded_allow_ips,
                       page_ttl=page_ttl, workers=workers, watch_interval=watch_interval)
        except ListenFailed as exc:  # as the node says it: a usage error (exit 2), a fix
            raise UserError(str(exc), fix="pick another --port (0 picks a free port), or "
                                          "stop the process that uses it") from None

    @group.command("seed")
    def seed(
        paths: list[Path] = typer.Argument(
            None, help="Wheels, folders of wheels, or plugin projects to publish (default: the "
                       "official plugins built into p2phost, signed)."
        ),
        data: Path = _DATA,
        database: str | None = _DATABASE,
        owner: str = typer.Option("p2phost", "--owner", help="Who owns the seeded plugins."),
    ) -> None:
        """Publish wheels (or build plugin projects) into the store; default: the built-in ones."""
        from rich.progress import Progress

        from p2phost_registry import BadRequest, SeedResult, Store
        from p2phost_registry import seed as run_seed

        projects = [p.resolve() for p in paths] if paths else _official_sources()
        if not projects:
            raise BadRequest(
                "this p2phost has no built-in plugins to seed (a development install): pass "
                "wheels or projects: p2phost registry seed --data DIR PATH..., or run "
                "scripts/dist and export P2PHOST_BUILTIN_DIR=dist/plugins"
            )
        if not paths:  # plugin authors install p2phost from the index too (plugin-authoring.md)
            host = _host_wheel()
            if host is not None:
                projects.append(host)
            else:
                console.print(f"note: p2phost itself is not published: this p2phost-registry "
                              f"carries no p2phost {__version__} wheel; publish it: p2phost "
                              f"registry seed --data {data} PATH/TO/p2phost-{__version__}-"
                              "py3-none-any.whl")
        store = Store(_data_dir(data), database)
        try:
            with Progress(console=console.rich, transient=True) as progress:
                task = progress.add_task("building and publishing", total=len(projects))
                seen: set[Path] = set()

                def report(result: SeedResult) -> None:
                    if result.project not in seen:
                        seen.add(result.project)
                        progress.advance(task)

                results = run_seed(store, projects, owner, report)
        finally:
            store.close()
        failed = 0
        for r in results:
            label = r.filename or r.project.name
            if r.outcome == "failed":
                failed += 1
                console.print(f"failed     {label}: {r.message}")
            else:
                console.print(f"{r.outcome:<10} {label}")
        published = sum(r.outcome == "published" for r in results)
        console.print(f"{published} files published, {len(results) - published - failed} "
                      f"already there, {failed} failed, into {_data_dir(data)}")
        if failed:
            raise typer.Exit(1)

    @tokens.command("create")
    def token_create(
        owner: str = typer.Option(..., "--owner", help="Who publishes with this token."),
        scope: list[str] = typer.Option(
            None, "--scope", help="A plugin name the token may publish (repeatable; none: any)."
        ),
        data: Path = _DATA,
        database: str | None = _DATABASE,
        expires_in: float | None = typer.Option(None, "--expires-in", metavar="DAYS",
                                                help="Expire after this many days."),
    ) -> None:
        """Create a publishing token and print it (the last word of the output)."""
        from p2phost_registry import Store

        store = Store(_existing_store(data), database)
        try:
            token = store.create_token(owner, scope or [], expires_in)
        finally:
            store.close()
        scopes = ", ".join(scope) if scope else "any plugin it owns or creates"
        until = f", expires in {expires_in:g} days" if expires_in is not None else ""
        console.print(f"token for {owner} (may publish: {scopes}{until}); keep it secret:")
        console.print(token)


def _host_wheel() -> Path | None:
    """This p2phost's wheel, which p2phost-registry carries when scripts/dist built both."""
    import p2phost_registry

    folder = Path(p2phost_registry.__file__).parent / "_host"
    return next(iter(sorted(folder.glob(f"p2phost-{__version__}-*.whl"))), None)


def _official_sources() -> list[Path]:
    """The built-in source's folder; in a development checkout, the official projects."""
    from p2phost_registry import plugin_projects

    from .._install import BuiltinSource

    builtin = BuiltinSource.find()
    if builtin is not None:
        return [builtin.root]
    for root in (Path.cwd() / "official-plugins",
                 Path(__file__).resolve().parents[3] / "official-plugins"):
        if root.is_dir():
            return plugin_projects(root)
    return []
