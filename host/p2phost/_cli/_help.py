"""The top-level command table and ``p2phost --help``, without importing typer.

``p2phost --help`` is the second commonest probe after ``--version``: it is written here,
laid out as click lays out help (``tests/cli/test_startup.py`` checks that both agree at
several terminal widths), so it needs none of the CLI's libraries.
"""

from __future__ import annotations

import shutil
import textwrap

SUMMARY = "p2phost: run a peer-to-peer messaging node whose parts are versioned plugins."

#: The root options, as the typer app declares them (``_app.main``).
OPTIONS = {
    "--version": "Print the version and exit.",
    "--debug": "Show tracebacks and debug logs.",
    "--log-format FORMAT": "Logs as text (default) or json: one object per line with node, "
                    "peer, topic and message id where known.",
    "-h, --help": "Show this message and exit.",
}

#: name -> (modules whose ``register(app)`` adds it, one-line help shown by ``p2phost --help``)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "init": (("project",), "Write p2phost.toml (a working default: tcp + noise + json + "
                           "static discovery + echo)."),
    "run": (("node",), "Run the node of ./p2phost.toml until SIGINT/SIGTERM."),
    "id": (("node",), "Print this project's peer id (the key is created on first use)."),
    "ping": (("node",), "Round trips to a node's echo app, with timings."),
    "send": (("node",), "Send one message (or one request, printing the reply) to a node."),
    "describe": (("describe",), "A peer's topics, delivery modes and message schemas (from "
                                "its hello)."),
    "peers": (("node",), "The peers of this project's running node (or, with --stats, its "
                         "delivery counters)."),
    "doctor": (("project",), "What is installed, what the manifest needs, what is wrong and "
                             "how to fix it."),
    "plugin": (("plugin", "authoring"), "Install, inspect and author plugins."),
    "key": (("keys",), "Publisher keys: sign the plugins you publish."),
    "registry": (("registry",), "Run and fill a plugin registry."),
    "dead": (("dead",), "Messages that could not be handled or sent: list, show, retry, "
                        "purge."),
    "trust": (("trust",), "The peers this project's node accepts ([trust] in p2phost.toml)."),
    "inbox": (("inbox",), "This node's durable inboxes on brokers and databases: list, stats, "
                          "purge, delete."),
    "top": (("top",), "Live view of the running node: peers, topics, mailboxes, outbox, "
                      "dead letters."),
    "completion": (("completion",), "Print the shell completion script for bash, zsh or fish."),
}



def root_help() -> str:
    """``p2phost --help``, as click would print it on this terminal."""
    width = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
    lines = ["Usage: p2phost [OPTIONS] COMMAND [ARGS]...", "",
             _wrap(SUMMARY, width, "  "), "", "Options:", *_rows(list(OPTIONS.items()), width),
             "", "Commands:", *_rows([(n, h) for n, (_, h) in COMMANDS.items()], width)]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int, indent: str = "") -> str:
    return textwrap.TextWrapper(width, initial_indent=indent, subsequent_indent=indent,
                                replace_whitespace=False).fill(text)


def _rows(rows: list[tuple[str, str]], width: int, indent: int = 2) -> list[str]:
    """A definition list: names, then their help wrapped in a second column."""
    first = min(max(len(name) for name, _ in rows), 30) + 2
    out = []
    for name, text in rows:
        wrapped = _wrap(text, max(width - first - 2, 10)).splitlines()
        if len(name) <= first - 2:
            out.append(" " * indent + name + " " * (first - len(name)) + wrapped[0])
        else:
            out += [" " * indent + name, " " * (first + indent) + wrapped[0]]
        out += [" " * (first + indent) + line for line in wrapped[1:]]
    return out
