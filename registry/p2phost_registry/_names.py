"""Look-alike plugin names: what a typo-squatter would register next to a real plugin."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from p2phost_sdk import normalize_name

# Characters that read alike in most fonts fold to one (PyPI folds the same ones).
_FOLD = str.maketrans({"1": "l", "i": "l", "0": "o"})
#: Names shorter than this are compared only after folding, never by edit distance,
#: since short names legitimately differ by one letter.
MIN_FUZZY_LENGTH = 6


def ultranormalize(name: str) -> str:
    """The name with separators dropped and look-alike characters folded."""
    return normalize_name(name).replace("-", "").translate(_FOLD)


def _distance_at_most_one(a: str, b: str) -> bool:
    """Whether one insertion, deletion, substitution or swap of neighbours turns a into b."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2 and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    for i in range(len(long_)):
        if long_[:i] + long_[i + 1:] == short:
            return True
    return False


def too_close(name: str, existing: Iterable[str]) -> str | None:
    """The first existing name that ``name`` could be mistaken for, or None.

    ``existing`` holds normalised names; an identical normalised name is not "close",
    it is the same plugin.
    """
    target = normalize_name(name)
    folded = ultranormalize(target)
    for other in existing:
        if other == target:
            continue
        other_folded = ultranormalize(other)
        if other_folded == folded:
            return other
        if (
            min(len(folded), len(other_folded)) >= MIN_FUZZY_LENGTH
            and _distance_at_most_one(folded, other_folded)
        ):
            return other
    return None


def suggestions(name: str, existing: Iterable[str], limit: int = 3) -> list[str]:
    """Existing names close to ``name``, best first, for "did you mean" messages."""
    return difflib.get_close_matches(normalize_name(name), list(existing), n=limit, cutoff=0.6)
