"""``p2phost describe ADDR``: a peer's topics, their delivery modes and message schemas.

Like gRPC reflection, from what the peer says in its hello when a connection opens
(docs/wire.md): its topics, the delivery of its acknowledged ones, and the JSON Schema of
each topic whose handler declares a model (``handler(model=...)``). It connects as
``ping`` does: a client node with this project's identity, transports and security.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from .._project import Project
from .._redact import redact
from .completion import peer_addresses

if TYPE_CHECKING:
    from .._runtime import Node


def report(node: Node, peer: str, address: str) -> dict[str, Any]:
    """What ``describe --json`` prints (docs/cli.md)."""
    hello = node.hello_of(peer)
    info = next((p for p in node.peers() if p.peer_id == peer), None)
    extra: dict[str, Any] = dict(hello.extra) if hello is not None else {}
    # A peer's hello is data from the network: keep only what has the documented shape.
    modes = _table(extra.get("delivery"))
    schemas = _table(extra.get("schemas"))
    omitted = extra.get("schemas_omitted")
    topics = sorted(hello.topics) if hello is not None else []
    return {
        "address": address, "peer_id": peer,
        "name": hello.name if hello is not None else None,
        "host_api": hello.host_api if hello is not None else None,
        "codec": info.codec if info is not None else None,
        "security": info.security if info is not None else None,
        "topics": [{"topic": t, "delivery": str(modes.get(t, "at-most-once")),
                    "schema": schemas.get(t)} for t in topics],
        "schemas_omitted": [t for t in omitted if isinstance(t, str)]
        if isinstance(omitted, list) else [],
    }


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _shown(value: object) -> str:
    """``value`` as text safe for a terminal: a peer chose its name, topics and modes, and
    an escape sequence among them would drive the user's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def _print(answer: dict[str, Any]) -> None:
    name = f" ({_shown(answer['name'])})" if answer.get("name") else ""
    print(f"peer id: {answer['peer_id']}{name}")
    print(f"address: {redact(str(answer['address']))}  codec: {answer['codec']}  "
          f"security: {answer['security']}  host-api: {_shown(answer['host_api'])}")
    topics = answer["topics"]
    if not topics:
        print("topics: none (no app handles a topic there)")
        return
    topics = [{**t, "topic": _shown(t["topic"]), "delivery": _shown(t["delivery"])}
              for t in topics]
    omitted = {_shown(t) for t in answer["schemas_omitted"]}
    width = max(len(t["topic"]) for t in topics)
    print("topics:")
    for t in topics:
        schema = "schema below" if t["schema"] is not None else (
            "schema not sent (too large)" if t["topic"] in omitted
            else "no model")
        print(f"  {t['topic']:<{width}}  {t['delivery']:<16}  {schema}")
    for t in topics:
        if t["schema"] is not None:
            print(f"\nschema of {t['topic']}:")
            print(json.dumps(t["schema"], indent=2, sort_keys=True))


def describe(
    address: str = typer.Argument(..., help="The node to describe, e.g. tcp://127.0.0.1:7400.",
                                  autocompletion=peer_addresses),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON "
                                 "(docs/cli.md)."),
    wait: float = typer.Option(0.0, "--wait", min=0.0, metavar="SECONDS",
                               help="Keep trying to connect this long while the node is not "
                                    "up yet."),
) -> None:
    """A peer's topics, delivery modes and message schemas (from its hello)."""
    import asyncio

    from ._client import as_client

    async def ask(node: Node, peer: str) -> dict[str, Any]:
        return report(node, peer, address)

    answer = asyncio.run(as_client(Project.find(), address, ask, wait=wait))
    if as_json:
        print(json.dumps(answer), flush=True)
    else:
        _print(answer)


def register(app: typer.Typer) -> None:
    """Add ``describe``."""
    app.command()(describe)
