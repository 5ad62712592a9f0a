"""Shell completion: ``p2phost completion bash|zsh|fish`` and the completers of names and
addresses.

The shells call ``p2phost`` again on every TAB with ``_P2PHOST_COMPLETE`` set; typer answers
from the same commands. The completers read ``p2phost.toml`` and ``.p2phost/known_peers``
with the standard library only, because a TAB must answer at once and never fail: a broken
or missing manifest completes nothing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import typer

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_P2PHOST_COMPLETE"


def _manifest() -> tuple[Path, dict[str, Any]] | None:
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        path = directory / "p2phost.toml"
        if path.is_file():
            try:
                return directory, tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
    return None


def plugin_names(incomplete: str) -> list[str]:
    """The plugins ``[plugins]`` of this project's manifest declares, for NAME arguments."""
    found = _manifest()
    plugins = found[1].get("plugins", {}) if found else {}
    return sorted(n for n in plugins if isinstance(n, str) and n.startswith(incomplete))


def peer_addresses(incomplete: str) -> list[str]:
    """Addresses of known peers: configured peer lists (static discovery), this node's own
    listen addresses, and the peer ids of ``.p2phost/known_peers`` (``p2phost trust``)."""
    found = _manifest()
    if found is None:
        return []
    root, data = found
    candidates: list[str] = []
    for table in data.get("config", {}).values():
        peers = table.get("peers", []) if isinstance(table, dict) else []
        candidates += [p for p in peers if isinstance(p, str)]
    listen = data.get("node", {}).get("listen", [])
    candidates += [a for a in (listen if isinstance(listen, list) else []) if isinstance(a, str)]
    try:
        lines = (root / ".p2phost" / "known_peers").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    candidates += [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    return list(dict.fromkeys(c for c in candidates if c.startswith(incomplete)))


def completion(shell: str = typer.Argument(..., metavar="SHELL",
                                           help="bash, zsh or fish.",
                                           autocompletion=lambda: list(SHELLS))) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Install it with, for bash: ``p2phost completion bash >> ~/.bashrc``; zsh: ``p2phost
    completion zsh > "${fpath[1]}/_p2phost"``; fish: ``p2phost completion fish >
    ~/.config/fish/completions/p2phost.fish``.
    """
    from typer._completion_shared import get_completion_script

    from .._errors import UserError

    if shell not in SHELLS:
        raise UserError(f"no completion for the shell {shell!r}",
                        fix=f"p2phost completion {' | '.join(SHELLS)}")
    if shell == "bash":
        print(_BASH)
        return
    print(get_completion_script(prog_name="p2phost", complete_var=COMPLETE_VAR, shell=shell))


# Bash splits the word under the cursor at ':' (COMP_WORDBREAKS), so `tcp://127.0.0.1:74`
# reaches a completer as five words and typer's script completes nothing once an address
# is begun. This one sends the line up to the cursor as the shell would split it at
# blanks, and hands bash back each answer without what bash already took as earlier words.
_BASH = r"""_p2phost_completion() {
    local IFS=$'\n' line="${COMP_LINE:0:COMP_POINT}" cur="${COMP_WORDS[COMP_CWORD]}" r
    local -a words
    IFS=$' \t' read -ra words <<< "$line"
    local cword=$(( ${#words[@]} - 1 ))
    [[ -z "$line" || "$line" =~ [[:space:]]$ ]] && cword=${#words[@]}
    local typed="${words[cword]}"
    local before="${typed%"$cur"}"
    COMPREPLY=()
    for r in $( env COMP_WORDS="$line" COMP_CWORD=$cword @VAR@=complete_bash $1 ); do
        COMPREPLY+=("${r#"$before"}")
    done
    return 0
}

complete -o default -F _p2phost_completion p2phost""".replace("@VAR@", COMPLETE_VAR)


def register(app: typer.Typer) -> None:
    """Add ``completion``."""
    app.command()(completion)
