"""Opening a node's two journals at start: replayed into the database first.

The outbox journal (:mod:`._outjournal`) always; the inbox journal (:mod:`._injournal`)
on a node that handles acknowledged topics, or when an earlier run left one behind
(it is replayed, then closed). Nothing is sent or taken before both are replayed.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ._injournal import INBOX_JOURNAL, INBOX_SEGMENT, OutcomeJournal
from ._journal import JOURNAL_NAME, Journal
from ._outjournal import JournalRows

log = logging.getLogger("p2phost.delivery")


def open_journals(database: Path, writer: sqlite3.Connection, *, handles: bool
                  ) -> tuple[Journal, Journal | None]:
    """The outbox journal and the inbox journal (None: this node handles no acknowledged
    topic) beside ``database``, replayed into it through ``writer``; a damaged one is a
    :class:`~._journal.JournalCorrupt` naming the file and the fix."""
    inbox = database.with_name(INBOX_JOURNAL)
    opened: list[Journal] = []
    try:
        opened.append(Journal(database.with_name(JOURNAL_NAME)))
        sent = JournalRows.replay(opened[0], writer)
        taken = 0
        if handles or inbox.exists():
            opened.append(Journal(inbox, INBOX_SEGMENT))
            taken = OutcomeJournal.replay(opened[1], writer)
    except BaseException:
        for journal in opened:
            journal.close()
        raise
    if sent or taken:
        log.info("replayed from the journals: %d messages sent and %d outcomes committed "
                 "before the last stop", sent, taken)
    if len(opened) == 2 and not handles:  # replayed; this node takes no acknowledged ones
        opened.pop().close()
    return opened[0], opened[1] if len(opened) == 2 else None
