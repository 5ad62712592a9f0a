"""``p2phost key new/show/register``: the publisher key that signs what you publish."""

from __future__ import annotations

import base64
from pathlib import Path

import typer

from ._app import command_group
from ._output import console

key_app = command_group("Publisher keys: sign the plugins you publish.",
                      no_args_is_help=True)

_KEY = typer.Option(None, "--key", metavar="KEYFILE",
                    help="The publisher key file (default: $P2PHOST_PUBLISHER_KEY, else "
                         "~/.config/p2phost/publisher.key).")


def _path(given: Path | None) -> Path:
    from .._keys import default_key_path

    return given.expanduser() if given else default_key_path()


@key_app.command("new")
def new(
    out: Path | None = typer.Option(None, "--out", metavar="PATH",
                                    help="Where to write the key (default: as for --key)."),
    force: bool = typer.Option(False, "--force",
                               help="Replace an existing key (your users will see a key "
                                    "change)."),
) -> None:
    """Make a new Ed25519 publisher key (mode 0600) and print its public key."""
    from .._keys import create_key, public_key_of

    path = _path(out)
    identity = create_key(path, force=force)
    console.print(f"wrote {path}")
    console.print("sign what you publish: p2phost plugin publish --sign"
                  + (f" --key {path}" if out else ""))
    console.print(public_key_of(identity))


@key_app.command("show")
def show(key: Path | None = _KEY,
         as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON "
                                      "(docs/cli.md).")) -> None:
    """Print the public key (ed25519:BASE64) of a publisher key file."""
    from .._keys import load_key, public_key_of

    path = _path(key)
    public = public_key_of(load_key(path))
    if as_json:
        import json

        print(json.dumps({"public_key": public, "path": str(path)}))
        return
    console.print(public)


@key_app.command("register")
def register_key(
    key: Path | None = _KEY,
    registry: str | None = typer.Option(None, "--registry", metavar="URL",
                                        help="The registry (default: as for plugin publish)."),
    token: str | None = typer.Option(None, "--token", metavar="TOKEN",
                                     help="A token of the owner, without --scope "
                                          "(default: $P2PHOST_TOKEN)."),
) -> None:
    """Make this key your publisher key on a registry (after replacing a lost key)."""
    from p2phost_sdk.signing import key_proof_message

    from .._authoring import RegistryClient
    from .._keys import load_key, public_key_of
    from .authoring import _registry_url as registry_url

    identity = load_key(_path(key))
    public = public_key_of(identity)
    proof = base64.b64encode(identity.sign(key_proof_message(public))).decode()
    url = registry_url(registry)
    with RegistryClient(url, token) as client:
        answer = client.register_key(public, proof)
    previous = answer.get("previous")
    if previous == public:
        console.print(f"{public} already is the publisher key of {answer.get('owner')} on {url}")
        return
    console.print(f"{public} is now the publisher key of {answer.get('owner')} on {url}"
                  + (f" (replacing {previous})" if previous else ""))
    if previous:
        console.print("users who installed your plugins will be asked to accept the new key "
                      "(p2phost plugin upgrade --trust-new-key): tell them how to check it")


def register(app: typer.Typer) -> None:
    """Add the ``key`` group."""
    app.add_typer(key_app, name="key")
