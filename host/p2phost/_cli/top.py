"""``p2phost top``: a live view of the project's running node, from its control socket.

Each second it asks the node for its counters (``stats``, the figures ``peers --stats``
and /metrics show) and draws rates per peer and per topic, mailboxes, the outbox and the
dead letters. ``--once --json`` prints one view for scripts (docs/cli.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from .._project import Project
from ._output import console


def _sample(project: Project) -> tuple[dict[str, Any], float]:
    from .._runtime import query_control

    return query_control(project.control_socket, "stats", start=project.start), \
        time.monotonic()


def _tables(shown: dict[str, Any], live: bool = True) -> Group:
    peers = Table(title="peers", title_justify="left", expand=False)
    for column in ("peer", "transport", "security", "rtt ms", "in/s", "out/s"):
        peers.add_column(column, justify="left" if column in ("peer", "transport",
                                                               "security") else "right")
    for p in shown["peers"]:
        rtt = "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.1f}"
        peers.add_row(p["peer_id"][:16], p["transport"], p["security"], rtt,
                      f"{p['in_per_s']:.1f}", f"{p['out_per_s']:.1f}")
    # Two spaces between columns and no borders: the ten columns fit 80 columns with their
    # headers whole ("failed/s" and "failed" were both cut to "fail…").
    topics = Table(title="topics", title_justify="left", box=None, padding=(0, 1))
    for column in ("topic", "mode", "in/s", "out/s", "handled/s", "failed/s", "failed",
                   "dropped", "outbox", "dead"):
        topics.add_column(column, justify="left" if column in ("topic", "mode") else "right",
                          min_width=len(column), no_wrap=True)
    for t in shown["topics"]:
        topics.add_row(t["topic"], t["mode"], f"{t['in_per_s']:.1f}", f"{t['out_per_s']:.1f}",
                       f"{t['handled_per_s']:.1f}", f"{t['failed_per_s']:.1f}",
                       str(t["failed"]), str(t["dropped"]), str(t["outbox"]),
                       str(t["dead_letters"]))
    boxes = Table(title="mailboxes", title_justify="left")
    for column in ("app", "queued", "running", "size"):
        boxes.add_column(column, justify="left" if column == "app" else "right")
    for b in shown["mailboxes"]:
        boxes.add_row(b["app"], str(b.get("queued", 0)), str(b.get("running", 0)),
                      str(b.get("size", 0)))
    summary = (f"outbox: {shown['outbox']} waiting (oldest {shown['outbox_oldest_s']:.1f}s)"
               f"   dead letters: {shown['dead_letters']}")
    if live:
        summary += f"   refreshed every {shown['interval_s']:.1f}s (Ctrl-C quits)"
    return Group(peers, topics, boxes, summary)


def top(
    once: bool = typer.Option(False, "--once", help="Print one view and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --once: the view as JSON "
                                 "(docs/cli.md)."),
    interval: float = typer.Option(1.0, "--interval", min=0.1, max=60.0,
                                   help="Seconds between refreshes (and over which rates "
                                   "are measured)."),
) -> None:
    """Live view of the running node: peers, topics, mailboxes, outbox, dead letters."""
    from .._observability._rates import view

    project = Project.find()
    before, then = _sample(project)
    if once:
        time.sleep(interval)
        after, now = _sample(project)
        shown = view(before, after, now - then)
        if as_json:
            print(json.dumps(shown), flush=True)
        else:
            console.print(_tables(shown, live=False))
        return
    if not console.is_terminal:
        _plain(project, before, then, interval)
        return
    try:
        with Live(console=console.rich, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(interval)
                after, now = _sample(project)
                live.update(_tables(view(before, after, now - then)), refresh=True)
                before, then = after, now
    except KeyboardInterrupt:
        pass


def _plain(project: Project, before: dict[str, Any], then: float, interval: float) -> None:
    """Piped or redirected: one view per interval, each written (and flushed) whole, so
    a log or ``tail -f`` shows them as they come and nothing waits for Ctrl-C."""
    from .._observability._rates import view

    try:
        while True:
            time.sleep(interval)
            after, now = _sample(project)
            console.rich.print(_tables(view(before, after, now - then), live=False))
            console.rich.print(f"--- {time.strftime('%H:%M:%S')}")
            console.rich.file.flush()
            before, then = after, now
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add the ``top`` command."""
    app.command()(top)
