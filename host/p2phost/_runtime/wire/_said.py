"""A peer's words, made safe to repeat: the one rule for text a peer sends.

A peer chooses the reason of its GOODBYE, the text of its ERROR frames and the fields of
its hello (its name, its host-api string, its session and nonce; the hello's lists are
bounded entry by entry in ``_handshake``). This node repeats them in its log, in CLI
messages, in the control socket's answers and in what it keeps per peer; a hostile peer
would put a flood (up to a frame, 16 MiB), newlines, terminal escapes or a ``fix:`` line
of its own there. :func:`said` cuts them where they are received, once.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

#: The most characters of a peer's words this node repeats.
MAX_SAID = 300
#: The most entries of a peer's list (its topics: up to thousands) a line names.
MAX_NAMED = 5


def said(words: str | bytes) -> str:
    """``words`` (a peer's, bytes as UTF-8) as one printable line of at most
    :data:`MAX_SAID` characters, with no "; fix: " of their own (a fix after them is this
    node's, and users run it). Only the bytes that can make the line are decoded."""
    if not isinstance(words, str):
        words = bytes(words[:MAX_SAID * 4]).decode(errors="replace")
    line = "".join(c if c.isprintable() else "?" for c in words[:MAX_SAID])
    # Cut again: each "; fix - " is a character longer than what it replaces.
    return line.replace("; fix: ", "; fix - ")[:MAX_SAID]


def named(names: Collection[str], most: int = MAX_NAMED) -> str:
    """The first ``most`` of ``names`` (a peer's topics, each a printable line: see
    ``_handshake``) in order, then how many more: a list of thousands would make one
    reason, log line or message of many KiB; "none" for no names."""
    first = heapq.nsmallest(most, names)
    more = f" and {len(names) - len(first)} more" if len(names) > len(first) else ""
    return ", ".join(first) + more if first else "none"
