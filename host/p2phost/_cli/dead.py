"""``p2phost dead ...``: the project's dead letters (list, show, retry, purge).

These work on ``.p2phost/delivery.db`` whether the node runs or not. ``retry`` goes
through the running node's control socket when there is one, so that its handlers
take the messages at once; otherwise the messages wait in the delayed-retry queue (or
the outbox) for the next ``p2phost run``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from .._errors import UserError
from .._project import Project
from ._app import command_group
from ._output import confirm, console
from ._stats import print_columns

if TYPE_CHECKING:
    from .._runtime.delivery._deadletter import DeadLetter, DeadLetters

dead_app = command_group("Messages that could not be handled or sent: list, show, retry, "
                            "purge.", no_args_is_help=True)

_TOPIC = typer.Option(None, "--topic", "-t", help="Only the dead letters of this topic.")
_ALL = typer.Option(False, "--all", help="Every dead letter (of --topic, if given).")
_JSON = typer.Option(False, "--json", help="Print JSON.")
_LIST_FIX = "p2phost dead list"


@contextmanager
def _store(project: Project, *, write: bool = False) -> Iterator[DeadLetters | None]:
    """The project's dead letters; None when the node never kept any."""
    from .._runtime.delivery._deadletter import DeadLetters
    from .._runtime.delivery._store import (
        DATABASE_NAME,
        StoreError,
        damaged,
        move_aside,
        open_database,
    )

    path = project.state_dir / DATABASE_NAME
    if not path.exists():
        yield None
        return
    settings = project.manifest.delivery
    try:
        db = open_database(path) if write else sqlite3.connect(f"file:{path}?mode=ro",
                                                               uri=True, timeout=5.0)
    except StoreError as exc:  # its text ends with its fix
        message, _, fix = str(exc).partition("\nfix: ")
        raise UserError(message, fix=fix or None) from exc
    except sqlite3.Error as exc:
        raise UserError(f"cannot read {path}: {exc}", fix=move_aside(path) if damaged(exc)
                        else "check the file's permissions, or move it aside") from exc
    try:
        yield DeadLetters(db, limit=settings.dead_letter_limit, keep=settings.dead_letter_keep)
    except sqlite3.Error as exc:
        # A damaged file fails the same way every time; a busy one may not next time.
        raise UserError(f"{path}: {exc}", fix=move_aside(path) if damaged(exc)
                        else "try again (the node may be busy writing)") from exc
    finally:
        db.close()


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _as_json(letter: DeadLetter) -> dict[str, object]:
    return {"id": letter.id, "direction": letter.direction, "peer": letter.peer,
            "message_id": f"{letter.message_id:016x}", "topic": letter.topic,
            "content_type": letter.content_type, "body": letter.body_text(),
            "attempts": letter.attempts, "reason": letter.reason, "error": letter.error,
            "traceback": letter.traceback, "first_at": letter.first_at,
            "dead_at": letter.dead_at}


def list_dead(topic: str | None = _TOPIC, as_json: bool = _JSON) -> None:
    """List the dead letters, oldest first."""
    project = Project.find()
    with _store(project) as store:
        letters = [] if store is None else store.entries(topic)
        limit = project.manifest.delivery.dead_letter_limit
        if as_json:
            print(json.dumps([_as_json(d) for d in letters]))
            return
        if not letters:
            console.print(f"no dead letters{f' on topic {topic!r}' if topic else ''}")
            return
        rows = [["id", "dead at", "topic", "from/to", "attempts", "reason"]]
        for d in letters:
            way = ("from " if d.direction == "in" else "to ") + d.peer[:12]
            rows.append([str(d.id), _when(d.dead_at), d.topic, way, str(d.attempts),
                         d.reason])
        print_columns(rows, left=6)
        total = store.count() if store is not None else 0
        console.print(f"{len(letters)} shown, {total} kept of at most {limit}")
        if total >= limit:
            drops = "the oldest" if project.manifest.delivery.dead_letter_keep == "newest" \
                else "each new one"
            console.print(f"the store is FULL: every new dead letter drops {drops} "
                          "(p2phost dead purge, or raise [delivery] dead-letter-limit)")


def show(letter_id: int = typer.Argument(..., help="The dead letter's id (see dead list)."),
         as_json: bool = _JSON) -> None:
    """Everything about one dead letter: its envelope, the error and its traceback."""
    with _store(Project.find()) as store:
        letter = None if store is None else store.get(letter_id)
    if letter is None:
        raise UserError(f"there is no dead letter #{letter_id}", fix=_LIST_FIX)
    if as_json:
        print(json.dumps(_as_json(letter)))
        return
    way = "received from" if letter.direction == "in" else "could not be sent to"
    rows = (
        ("dead letter", f"#{letter.id}"), ("message", f"{letter.message_id:016x}"),
        ("topic", letter.topic), (way, letter.peer), ("content type", letter.content_type),
        ("attempts", str(letter.attempts)), ("first seen", _when(letter.first_at)),
        ("dead since", _when(letter.dead_at)), ("reason", letter.reason),
        ("error", letter.error or "-"), ("body", letter.body_text(4000)),
    )
    width = max(len(label) for label, _ in rows) + 2  # the colon and at least one space
    for label, value in rows:
        console.print(f"{label + ':':<{width}}{value}")
    if letter.traceback:
        console.print("traceback:")
        console.print(letter.traceback.rstrip())


def _chosen(store: DeadLetters | None, ids: list[int], everything: bool,
            topic: str | None, verb: str) -> list[DeadLetter]:
    if ids and everything:
        raise UserError(f"give dead letter ids or --all to {verb}, not both",
                        fix=f"p2phost dead {verb} --all [--topic T]")
    if not ids and not everything:
        raise UserError(f"say which dead letters to {verb}: their ids, or --all",
                        fix=f"p2phost dead {verb} ID..., or p2phost dead {verb} --all "
                            "[--topic T]")
    letters = [] if store is None else store.select(ids, topic)
    missing = sorted(set(ids) - {d.id for d in letters})
    if missing:
        which = ", ".join(f"#{i}" for i in missing)
        on = f" on topic {topic!r}" if topic else ""
        raise UserError(f"there is no dead letter {which}{on}", fix=_LIST_FIX)
    return letters


def retry(ids: list[int] = typer.Argument(None, help="Dead letter ids (see dead list)."),
          everything: bool = _ALL, topic: str | None = _TOPIC) -> None:
    """Send dead letters back to their handlers (or their peers), after a fix."""
    from .._runtime import query_control
    from .._runtime._errors import NodeNotRunning
    from .._runtime.delivery._deadletter import DeadLetters
    from .._runtime.delivery._store import transaction

    project = Project.find()
    with _store(project) as store:
        letters = _chosen(store, ids or [], everything, topic, "retry")
    if not letters:
        console.print(f"no dead letters to retry{f' on topic {topic!r}' if topic else ''}")
        return
    try:
        answer = query_control(project.control_socket, "dead-retry", start=project.start,
                               ids=[d.id for d in letters], topic=topic)
    except NodeNotRunning:
        with _store(project, write=True) as store:
            assert store is not None
            letters = store.select([d.id for d in letters], topic)
            with transaction(store.db) as db:
                DeadLetters.requeue(db, letters)
        console.print(f"{len(letters)} dead letters go back to their handlers when the node "
                      f"runs (start it with {project.start})")
        return
    if "error" in answer:
        raise UserError(f"the running node refused: {answer['error']}",
                        fix="p2phost --debug dead retry ... and read the node's log")
    console.print(f"sent {answer.get('retried', 0)} dead letters back to their handlers "
                  "(the running node has them)")


def purge(ids: list[int] = typer.Argument(None, help="Dead letter ids (see dead list)."),
          everything: bool = _ALL, topic: str | None = _TOPIC,
          yes: bool = typer.Option(False, "--yes", "-y", help="With --all: do it without "
                                   "asking.")) -> None:
    """Delete dead letters for good (--all asks first, as `inbox purge` does)."""
    from .._runtime.delivery._deadletter import DeadLetters
    from .._runtime.delivery._store import transaction

    project = Project.find()
    with _store(project, write=True) as store:
        letters = _chosen(store, ids or [], everything, topic, "purge")
        if everything and letters:
            # Ids are a choice already made; --all is the sweeping one, asked like inbox purge.
            on = f" on topic {topic!r}" if topic else ""
            confirm(f"delete all {len(letters)} dead letters{on} for good?", yes,
                    "purging every dead letter")
        if store is not None and letters:
            with transaction(store.db) as db:
                DeadLetters.remove(db, letters)
    console.print(f"purged {len(letters)} dead letters")


def register(app: typer.Typer) -> None:
    """Add the ``dead`` command group."""
    dead_app.command("list")(list_dead)
    dead_app.command()(show)
    dead_app.command()(retry)
    dead_app.command()(purge)
    app.add_typer(dead_app, name="dead")
