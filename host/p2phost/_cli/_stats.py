"""``p2phost peers --stats``: a running node's delivery counters, one row per topic."""

from __future__ import annotations

from typing import Any

from ._output import console

_COLUMNS = (("sent", "sent"), ("resent", "resent"), ("received", "received"),
            ("acked", "acked"),
            ("handled", "handled"), ("failed", "failed"), ("retried", "retried"),
            ("dead_lettered", "dead-lettered"),
            ("duplicates", "duplicates"), ("dropped", "dropped"))


def print_columns(rows: list[list[str]], left: int) -> None:
    """``rows`` (the header first) as aligned columns: the first ``left`` to the left,
    the rest to the right. Never cut to the terminal's width: scripts read it too."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(w) if i < left else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        console.print("  ".join(cells).rstrip())


def print_stats(answer: dict[str, Any]) -> None:
    """The answer of the control socket's ``stats`` command, one row per topic."""
    topics: dict[str, dict[str, int]] = answer.get("topics", {})
    modes: dict[str, str] = answer.get("modes", {})
    queues = [answer.get(name, {}) for name in ("outbox", "delayed", "dead")]
    names = sorted({*topics, *modes, *(t for q in queues for t in q)})
    header = ["topic", "mode", *(label for _, label in _COLUMNS), "in-outbox", "delayed",
              "dead-letters"]
    rows = [header] + [
        [topic, modes.get(topic, "at-most-once"),
         *(str(topics.get(topic, {}).get(key, 0)) for key, _ in _COLUMNS),
         *(str(queue.get(topic, 0)) for queue in queues)]
        for topic in names]
    if names:
        print_columns(rows, left=2)
    else:
        console.print("no acknowledged topics and no messages counted yet")
    console.print(f"acknowledgements for unknown messages (ignored): "
                  f"{answer.get('unknown_acks', 0)}")
    for reason, count in sorted(answer.get("drop_reasons", {}).items()):
        console.print(f"dropped: {count} ({reason})")
    for app, box in sorted(answer.get("mailboxes", {}).items()):
        console.print(f"mailbox {app}: {box.get('queued', 0)} queued of {box.get('size', 0)} "
                      f"({box.get('running', 0)} being handled)")
    links = answer.get("connections")
    if links:
        console.print(f"connections: {links.get('peers', 0)} peers, {links.get('clients', 0)} "
                      f"clients, {links.get('handshaking', 0)} in handshake; refused "
                      f"{links.get('refused', 0)}, failed handshakes "
                      f"{links.get('failed_handshakes', 0)}")
