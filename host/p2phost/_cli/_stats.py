"""``p2phost peers --stats``: a running node's delivery counters, one row per topic."""

from __future__ import annotations

from typing import Any

from ._output import console

_COLUMNS = (("sent", "sent"), ("resent", "resent"), ("acked", "acked"),
            ("handled", "handled"), ("retried", "retried"), ("dead_lettered", "dead-lettered"),
            ("duplicates", "duplicates"), ("dropped", "dropped"))


def print_stats(answer: dict[str, Any]) -> None:
    """The answer of the control socket's ``stats`` command, as a table."""
    from rich.table import Table

    topics: dict[str, dict[str, int]] = answer.get("topics", {})
    modes: dict[str, str] = answer.get("modes", {})
    queues = {name: answer.get(name, {}) for name in ("outbox", "delayed", "dead")}
    names = sorted({*topics, *modes, *(t for q in queues.values() for t in q)})
    if not names:
        console.print("no messages yet")
    else:
        table = Table(box=None, pad_edge=False)
        table.add_column("topic")
        table.add_column("mode")
        for _, label in _COLUMNS:
            table.add_column(label, justify="right")
        for label in ("in outbox", "delayed", "dead letters"):
            table.add_column(label, justify="right")
        for topic in names:
            counters = topics.get(topic, {})
            table.add_row(topic, modes.get(topic, "at-most-once"),
                          *(str(counters.get(key, 0)) for key, _ in _COLUMNS),
                          *(str(queue.get(topic, 0)) for queue in queues.values()))
        console.print(table)
    console.print(f"acknowledgements for unknown messages (ignored): "
                  f"{answer.get('unknown_acks', 0)}")
    for reason, count in sorted(answer.get("drop_reasons", {}).items()):
        console.print(f"dropped: {count} ({reason})")
