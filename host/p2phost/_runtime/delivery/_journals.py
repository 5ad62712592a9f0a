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
    outbox, inbox = database.with_name(JOURNAL_NAME), database.with_name(INBOX_JOURNAL)
    # A journal_mark row: a journal was opened with this database (written below), so
    # it may hold records the database lacks; p2phost never removes or empties one.
    used = {mark for (mark,) in writer.execute("SELECT id FROM journal_mark")}
    for mark, path in enumerate((outbox, inbox)):
        if mark in used and not path.exists():
            # Moving a damaged journal aside is the way on its error gives: say what
            # that cost, but go on.
            log.warning("%s is missing, but the delivery database says it was in use: "
                        "what it held that the database does not (messages sent but not "
                        "yet acknowledged, or handlers' outcomes) is lost", path)
    opened: list[Journal] = []
    try:
        opened.append(Journal(outbox, used=0 in used))
        sent = JournalRows.replay(opened[0], writer)
        taken = 0
        if handles or inbox.exists():
            opened.append(Journal(inbox, INBOX_SEGMENT, used=1 in used))
            taken = OutcomeJournal.replay(opened[1], writer)
        for mark in range(len(opened)):
            writer.execute("INSERT OR IGNORE INTO journal_mark (id, folded) VALUES (?, 0)",
                           (mark,))
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
