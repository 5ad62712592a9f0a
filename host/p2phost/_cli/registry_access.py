"""``p2phost registry token list/revoke/expire`` and ``p2phost registry owner add/remove``.

Token commands act on the store directly (an operator with --data/--database, any owner's
tokens) or, with --registry, through the API with the caller's token (its owner's tokens
only). Owner commands go through the API: only an owner may change a plugin's owners.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ._app import command_group
from ._output import console

_REMOTE = typer.Option(None, "--registry", metavar="URL",
                       help="Ask this registry with --token instead of opening the store.")
_TOKEN = typer.Option(None, "--token", metavar="TOKEN",
                      help="Your token, for --registry (default: $P2PHOST_TOKEN).")


def _print_tokens(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no tokens")
        return
    console.print(f"{'prefix':<14}{'owner':<16}{'state':<9}{'expires':<12}{'last used':<12}scopes")
    for row in rows:
        console.print(
            f"{row['prefix']:<14}{row['owner']:<16}{row['state']:<9}"
            f"{(row['expires'] or 'never')[:10]:<12}{(row['last_used'] or 'never')[:10]:<12}"
            f"{', '.join(row['scopes']) or 'any'}")


def _info(info: Any) -> dict[str, Any]:
    return {"prefix": info.prefix, "owner": info.owner, "scopes": list(info.scopes),
            "expires": info.expires, "revoked": info.revoked, "last_used": info.last_used,
            "state": info.state}


def register_access(group: typer.Typer, tokens: typer.Typer, data_option: Any,
                    database_option: Any, data_dir: Any) -> None:
    """Add the token list/revoke/expire and owner commands to the ``registry`` group."""
    owners = command_group("Who may publish a plugin.", no_args_is_help=True)
    group.add_typer(owners, name="owner")

    def _store(data: Path, database: str | None) -> Any:
        from p2phost_registry import Store

        return Store(data_dir(data, database=database), database)

    def _client(registry: str, token: str | None) -> Any:
        from .._authoring import RegistryClient

        return RegistryClient(registry, token)

    @tokens.command("list")
    def token_list(
        owner: str | None = typer.Option(None, "--owner", help="Only this owner's tokens."),
        data: Path = data_option, database: str | None = database_option,
        registry: str | None = _REMOTE, token: str | None = _TOKEN,
        as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON "
                                     "(docs/cli.md)."),
    ) -> None:
        """List tokens by prefix (never their secrets), with state and expiry."""
        show = (lambda rows: print(json.dumps({"tokens": rows}))) if as_json else _print_tokens
        if registry:
            with _client(registry, token) as client:
                show(client.tokens()["tokens"])
            return
        store = _store(data, database)
        try:
            show([_info(t) for t in store.tokens(owner)])
        finally:
            store.close()

    def _end(prefix: str, days: float | None, data: Path, database: str | None,
             registry: str | None, token: str | None) -> dict[str, Any]:
        if registry:
            with _client(registry, token) as client:
                answer: dict[str, Any] = client.end_token(prefix, days)
                return answer
        store = _store(data, database)
        try:
            info = (store.revoke_token(prefix) if days is None
                    else store.expire_token(prefix, days))
        finally:
            store.close()
        return _info(info)

    @tokens.command("revoke")
    def token_revoke(
        prefix: str = typer.Argument(..., help="The token's prefix (as `token list` shows)."),
        data: Path = data_option, database: str | None = database_option,
        registry: str | None = _REMOTE, token: str | None = _TOKEN,
    ) -> None:
        """Revoke a token now: every server sharing the store refuses it at once."""
        info = _end(prefix, None, data, database, registry, token)
        console.print(f"revoked {info['prefix']} of {info['owner']}")

    @tokens.command("expire")
    def token_expire(
        prefix: str = typer.Argument(..., help="The token's prefix (as `token list` shows)."),
        days: float = typer.Option(0.0, "--in", metavar="DAYS",
                                   help="Days from now (0: now)."),
        data: Path = data_option, database: str | None = database_option,
        registry: str | None = _REMOTE, token: str | None = _TOKEN,
    ) -> None:
        """Make a token expire, now or in some days."""
        info = _end(prefix, days, data, database, registry, token)
        console.print(f"{info['prefix']} of {info['owner']} expires {info['expires']}")

    def _owners(name: str, owner: str, add: bool, registry: str, token: str | None) -> None:
        with _client(registry, token) as client:
            answer = client.owners(name, owner, add=add)
        console.print(f"owners of {answer.get('name', name)}: "
                      f"{', '.join(answer.get('owners', []))}")

    @owners.command("add")
    def owner_add(
        name: str = typer.Argument(..., help="The plugin."),
        owner: str = typer.Argument(..., help="Who may publish it too."),
        registry: str = typer.Option(..., "--registry", metavar="URL", help="The registry."),
        token: str | None = _TOKEN,
    ) -> None:
        """Add an owner to a plugin you own."""
        _owners(name, owner, True, registry, token)

    @owners.command("remove")
    def owner_remove(
        name: str = typer.Argument(..., help="The plugin."),
        owner: str = typer.Argument(..., help="The owner to remove (never the last)."),
        registry: str = typer.Option(..., "--registry", metavar="URL", help="The registry."),
        token: str | None = _TOKEN,
    ) -> None:
        """Remove an owner from a plugin you own."""
        _owners(name, owner, False, registry, token)
