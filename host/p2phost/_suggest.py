""""Did you mean": the nearest known names to one a user typed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, known: Iterable[str], limit: int = 3,
                cutoff: float = 0.8) -> list[str]:
    """The known names that look like ``name`` (a typo, a cut-off name), best first.

    The cutoff is high because siblings look alike (``tcp-transport``, ``mem-transport``):
    suggesting one for the other would point the wrong way.
    """
    known = [k for k in dict.fromkeys(known) if k != name]
    found = difflib.get_close_matches(name, known, n=limit, cutoff=cutoff)
    found += [k for k in known if len(name) >= 3 and k.startswith(name) and k not in found]
    return found[:limit]


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.8) -> str:
    """``"; did you mean 'x'?"`` to end a message with, or "" when nothing is close."""
    found = close_names(name, known, cutoff=cutoff)
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) for f in found) + "?"
