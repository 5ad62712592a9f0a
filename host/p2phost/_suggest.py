""""Did you mean": the nearest known names to one a user typed."""

from __future__ import annotations

from collections.abc import Iterable


def typos(a: str, b: str) -> int:
    """Edits between ``a`` and ``b``: insertions, deletions, substitutions and swaps of two
    neighbours (optimal string alignment distance)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            best = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, previous2[j - 2] + 1)
            row.append(best)
        previous2, previous = previous, row
    return previous[-1]


def close_names(name: str, known: Iterable[str], limit: int = 3, *,
                prefixes: bool = True) -> list[str]:
    """The known names ``name`` is probably a typo of (or, with ``prefixes``, the start of),
    nearest first.

    One typo per five characters at most: siblings such as ``tcp-transport`` and
    ``mem-transport`` differ by three, and suggesting one for the other points the wrong way.
    """
    allowed = max(1, len(name) // 5)
    scored = sorted((typos(name, k), k) for k in dict.fromkeys(known) if k != name)
    found = [k for distance, k in scored if distance <= allowed]
    if prefixes and len(name) >= 3:
        found += [k for _, k in scored if k.startswith(name) and k not in found]
    return found[:limit]


def did_you_mean(name: str, known: Iterable[str], *, prefixes: bool = True) -> str:
    """``"; did you mean 'x'?"`` to end a message with, or "" when nothing is close."""
    found = close_names(name, known, prefixes=prefixes)
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) for f in found) + "?"
