"""``p2phost trust add/remove/list``: the peers this project's node accepts.

``[trust] peers`` of p2phost.toml is written by people; ``.p2phost/known_peers`` by
these commands and by trust on first use. A running node reads the file again when it
changes, so ``trust add`` and ``trust remove`` take effect without a restart.
"""

from __future__ import annotations

import json

import tomlkit
import typer

from p2phost_sdk import is_peer_id

from .._errors import UserError
from .._project import Project
from .._trust import KNOWN_PEERS, KnownPeers
from ._app import command_group
from ._output import console
from .completion import peer_addresses

trust_app = command_group("The peers this project's node accepts ([trust] in p2phost.toml).",
                        no_args_is_help=True)


def _known(project: Project) -> KnownPeers:
    return KnownPeers(project.state_dir / KNOWN_PEERS)


def _policy_note(project: Project) -> None:
    policy = project.manifest.trust.policy
    if policy == "open":
        console.print('note: [trust] policy is "open" in p2phost.toml, so every peer is '
                      'accepted; set policy = "allowlist" or "tofu" for the list to matter')


@trust_app.command("add")
def add(
    peer_id: str = typer.Argument(..., help="The peer id (`p2phost id` in its project)."),
    name: str = typer.Option("", "--name", help="The peer's node name, for tofu."),
) -> None:
    """Trust a peer (recorded in .p2phost/known_peers)."""
    if not is_peer_id(peer_id):
        raise UserError(f"{peer_id!r} is not a peer id",
                        fix="copy the id that `p2phost id` prints in that node's project")
    project = Project.find()
    known = _known(project)
    if peer_id in project.manifest.trust.peers or any(
            p.peer_id == peer_id for p in known.peers()):
        console.print(f"{peer_id} is trusted already")
    else:
        known.add(peer_id, name)
        console.print(f"trusting {peer_id}{f' ({name})' if name else ''}")
    _policy_note(project)


@trust_app.command("remove")
def remove(
    key: str = typer.Argument(..., help="A peer id, or a name known peers are recorded with.",
                              autocompletion=peer_addresses),
) -> None:
    """Stop trusting a peer (by peer id or name); under tofu, accept its next key."""
    project = Project.find()
    gone = [p.peer_id for p in _known(project).remove(key)]
    if key in project.manifest.trust.peers:
        document = tomlkit.parse(project.manifest_path.read_text(encoding="utf-8"))
        peers = document["trust"]["peers"]  # type: ignore[index]
        peers.remove(key)  # type: ignore[union-attr]
        project.manifest_path.write_text(tomlkit.dumps(document), encoding="utf-8")
        gone.append(f"{key} (from [trust] peers in p2phost.toml)")
    if not gone:
        from .._suggest import close_names, did_you_mean

        known = [*project.manifest.trust.peers,
                 *(n for p in _known(project).peers() for n in (p.peer_id, p.name) if n)]
        close = close_names(key, known)
        raise UserError(f"no trusted peer has the id or name {key!r}"
                        + did_you_mean(key, known),
                        fix=f"p2phost trust remove {close[0]}" if close
                        else "p2phost trust list")
    for entry in gone:
        console.print(f"removed {entry}")


@trust_app.command("list")
def list_peers(
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """The trust policy and the trusted peers."""
    project = Project.find()
    settings = project.manifest.trust
    rows = [{"peer_id": p, "name": "", "source": "p2phost.toml", "added": ""}
            for p in settings.peers]
    rows += [{"peer_id": p.peer_id, "name": p.name, "source": f"known_peers ({p.how})",
              "added": p.added} for p in _known(project).peers()]
    if as_json:
        print(json.dumps({"policy": settings.policy, "peers": rows}))
        return
    console.print(f"policy: {settings.policy} ({len(rows)} trusted peers)")
    for row in rows:
        console.print(f"{row['peer_id']}  {row['name'] or '-'}  {row['source']}  "
                      f"{row['added']}".rstrip())


def register(app: typer.Typer) -> None:
    """Add ``p2phost trust``."""
    app.add_typer(trust_app, name="trust")
