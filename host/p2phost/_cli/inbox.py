"""``p2phost inbox ...``: this node's durable inboxes on brokers and databases.

An inbox (one per inbox medium in ``[node] listen``) holds what was stored for the node
while it did not run; it stays across clean stops and crashes. These commands look at it
and remove what it holds, whether the node runs or not, through the medium's own client.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from .._errors import UserError
from .._project import Project
from .._redact import redact
from ._app import command_group
from ._output import confirm, console
from ._stats import print_columns

if TYPE_CHECKING:
    from p2phost_sdk.inbox import InboxTransport

T = TypeVar("T")
inbox_app = command_group("This node's durable inboxes on brokers and databases: list, "
                             "stats, purge, delete.", no_args_is_help=True)
_JSON = typer.Option(False, "--json", help="Print JSON.")
_MEDIUM = typer.Argument(None, help="Only the inbox on this medium (a URL of [node] listen, "
                                    "e.g. redis://127.0.0.1:6379/0); default: every one.")
_YES = typer.Option(False, "--yes", "-y", help="Do it without asking.")


def _inboxes(project: Project, medium: str | None) -> list[tuple[str, InboxTransport]]:
    """(listen URL, transport) of each inbox medium in ``[node] listen``."""
    from p2phost_sdk.inbox import InboxTransport

    from .._plugins import PluginManager
    from .._schemes import scheme_of

    settings = project.manifest.node
    identity = project.identity()
    parts = PluginManager(project).load().build(identity.peer_id, settings.max_frame_size,
                                                identity)
    found = []
    for url in settings.listen:
        transport = parts.transports.get(scheme_of(url))  # NATS:// is nats:// (as a run's)
        if isinstance(transport, InboxTransport):
            scheme = scheme_of(medium) if medium else ""
            if medium is None or (scheme in type(transport).schemes and
                                  transport.parse(url).public == transport.parse(medium).public):
                found.append((url, transport))
    if not found:
        which = f" on {medium}" if medium else ""
        raise UserError(f"this node has no inbox{which}: [node] listen in p2phost.toml names "
                        "no broker or database" + (" at that URL" if medium else ""),
                        # `inbox list` names the inboxes there are; with none, only a
                        # broker or database in [node] listen makes one.
                        fix="p2phost inbox list" if medium else
                        "add a broker or database URL to [node] listen in p2phost.toml, e.g. "
                        "redis://127.0.0.1:6379/0, with its transport (docs/transports.md)")
    return found


def _each(medium: str | None,
          work: Callable[[str, InboxTransport], Awaitable[T]],
          ask: Callable[[], None] | None = None) -> list[T]:
    project = Project.find()
    inboxes = _inboxes(project, medium)
    if ask is not None:
        ask()  # after _inboxes: a node with no inbox says so rather than asking

    async def run() -> list[T]:
        from p2phost_sdk import TransportError

        answers = []
        for url, transport in inboxes:
            try:
                answers.append(await work(url, transport))
            except TransportError as exc:
                raise UserError(f"inbox on {url}: {exc}",
                                fix="check that the broker or database runs there") from exc
        return answers

    return asyncio.run(run())


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _number(value: Any) -> str:
    return "?" if value is None else str(value)


def list_inboxes(as_json: bool = _JSON) -> None:
    """This node's inboxes: medium, whether it exists, records waiting, bytes."""
    answers = _each(None, lambda url, t: t.inbox_stats(url))
    if as_json:
        keys = ("medium", "inbox", "exists", "records", "bytes")
        print(redact(json.dumps([{k: a.get(k) for k in keys} for a in answers], indent=2)))
        return
    rows = [["MEDIUM", "INBOX", "EXISTS", "RECORDS", "BYTES"]]
    rows += [[a["medium"], a["inbox"][:12] + "...", "yes" if a.get("exists") else "no",
              _number(a.get("records")), _number(a.get("bytes"))] for a in answers]
    print_columns(rows, 3)


def stats(medium: str | None = _MEDIUM, as_json: bool = _JSON) -> None:
    """What each inbox holds (records, bytes, oldest, senders) and what became of the
    letters stored in it (handled, rejected, skipped copies, expired unread); and the
    sealed connection frames this node refused (replayed, altered, forged, stale)."""
    from .._runtime.wire._guardfile import GUARD_NAME, read_counts

    answers = _each(medium, lambda url, t: t.inbox_stats(url))
    # Node-wide: sealed connection frames refused (replayed, altered, forged, stale).
    refused = read_counts(Project.find().state_dir / GUARD_NAME)
    for answer in answers:
        answer["frames_refused"] = refused
    if as_json:
        print(redact(json.dumps(answers, indent=2)))
        return
    for answer in answers:
        console.print(f"{answer['medium']}  inbox {answer['inbox']}"
                      f"{'' if answer.get('exists') else ' (not created yet)'}")
        senders = answer.get("senders")
        for label, value in (
            ("waiting records", _number(answer.get("records"))),
            ("bytes", _number(answer.get("bytes"))),
            ("oldest", _when(answer.get("oldest"))),
            ("senders", "?" if senders is None else
             ", ".join(f"{p[:12]}... ({n})" for p, n in sorted(senders.items())) or "none"),
            ("handled", str(answer.get("handled", 0))),
            ("rejected", str(answer.get("rejected", 0))),
            ("copies skipped", str(answer.get("copies", 0))),
            ("expired unread", str(answer.get("expired", 0))),
            ("frames refused", ", ".join(f"{k} {n}" for k, n in sorted(refused.items()))
             or "none"),
        ):
            console.print(f"  {label:<16} {value}")


def purge(medium: str | None = _MEDIUM, yes: bool = _YES, as_json: bool = _JSON) -> None:
    """Remove every record waiting in this node's inboxes (the inboxes stay)."""
    removed = _each(medium, lambda url, t: _with_url(url, t.purge_inbox(url)),
                    lambda: confirm("remove every record waiting in this node's inbox(es)?",
                                    yes, "purging the inbox"))
    if as_json:
        print(json.dumps([{"medium": u, "purged": n} for u, n in removed], indent=2))
        return
    for url, count in removed:
        console.print(f"purged {_number(count)} records from the inbox on {url}")


def delete(medium: str | None = _MEDIUM, yes: bool = _YES, as_json: bool = _JSON) -> None:
    """Remove this node's inboxes and what they hold (the next `p2phost run` makes new,
    empty ones; until then, messages to the node are stored in a new inbox)."""
    deleted = _each(medium, lambda url, t: _with_url(url, t.delete_inbox(url)),
                    lambda: confirm("delete this node's inbox(es) and everything waiting "
                                    "there?", yes, "deleting the inbox"))
    if as_json:
        print(json.dumps([{"medium": u, "deleted": d} for u, d in deleted], indent=2))
        return
    for url, existed in deleted:
        console.print(f"deleted the inbox on {url}" if existed else f"no inbox on {url}")


async def _with_url(url: str, work: Awaitable[T]) -> tuple[str, T]:
    return redact(url), await work  # printed: no broker password


def register(app: typer.Typer) -> None:
    """Add the ``inbox`` command group."""
    inbox_app.command("list")(list_inboxes)
    inbox_app.command()(stats)
    inbox_app.command()(purge)
    inbox_app.command()(delete)
    app.add_typer(inbox_app, name="inbox")
