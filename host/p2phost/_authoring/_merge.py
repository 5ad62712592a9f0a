"""Three-way merges of text: the author's file, the old template output, the new one.

``git merge-file`` does it when git is installed (the merge everyone knows); otherwise a
line-based diff3 merge on :mod:`difflib` gives the same result for the usual cases. Both
mark conflicts with the standard markers.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

OURS_LABEL = "yours"
THEIRS_LABEL = "template"


@dataclass(frozen=True)
class MergeResult:
    """A merged text and how many conflicts it marks."""

    text: str
    conflicts: int


def unresolved(text: str) -> int:
    """How many conflict blocks ``text`` still marks (``<<<<<<< yours`` lines)."""
    return sum(1 for line in text.splitlines() if line == f"<<<<<<< {OURS_LABEL}")


def merge3(ours: str, base: str, theirs: str, *, use_git: bool = True) -> MergeResult:
    """Merge the changes base->ours and base->theirs; conflicts get ``<<<<<<<`` markers.

    A file that still marks conflicts from an earlier merge is not merged again (that
    would nest markers): it is returned as it is, with its conflicts counted.
    """
    pending = unresolved(ours)
    if pending:
        return MergeResult(ours, pending)
    if ours == theirs or theirs == base:
        return MergeResult(ours, 0)
    if ours == base:
        return MergeResult(theirs, 0)
    git = shutil.which("git") if use_git else None
    if git is not None:
        return _git_merge(git, ours, base, theirs)
    return _difflib_merge(ours, base, theirs)


def _git_merge(git: str, ours: str, base: str, theirs: str) -> MergeResult:
    with tempfile.TemporaryDirectory(prefix="p2phost-merge-") as tmp:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        proc = subprocess.run(
            [git, "merge-file", "-p", "-L", OURS_LABEL, "-L", "base", "-L", THEIRS_LABEL,
             *paths], capture_output=True, timeout=60, check=False)
    if proc.returncode < 0 or proc.returncode > 127:
        # git could not merge at all (not a conflict): fall back rather than fail.
        return _difflib_merge(ours, base, theirs)
    return MergeResult(proc.stdout.decode("utf-8"), proc.returncode)


def _sync_regions(base: list[str], ours: list[str], theirs: list[str]
                  ) -> list[tuple[int, int, int, int, int, int]]:
    """Stretches unchanged on both sides: (base start, end, ours start, end, theirs ...)."""
    a_blocks = SequenceMatcher(None, base, ours, autojunk=False).get_matching_blocks()
    b_blocks = SequenceMatcher(None, base, theirs, autojunk=False).get_matching_blocks()
    regions = []
    ia = ib = 0
    while ia < len(a_blocks) and ib < len(b_blocks):
        a_base, a_at, a_len = a_blocks[ia]
        b_base, b_at, b_len = b_blocks[ib]
        start, end = max(a_base, b_base), min(a_base + a_len, b_base + b_len)
        if start < end:
            a_start, b_start = a_at + start - a_base, b_at + start - b_base
            regions.append((start, end, a_start, a_start + end - start,
                            b_start, b_start + end - start))
        if a_base + a_len < b_base + b_len:
            ia += 1
        else:
            ib += 1
    regions.append((len(base), len(base), len(ours), len(ours), len(theirs), len(theirs)))
    return regions


def _difflib_merge(ours: str, base: str, theirs: str) -> MergeResult:
    """The diff3 algorithm over lines (as in bzr's merge3): sync regions, then chunks."""
    b_lines, o_lines, t_lines = (s.splitlines(keepends=True) for s in (base, ours, theirs))
    out: list[str] = []
    conflicts = 0
    z = a = b = 0
    for z_start, z_end, a_start, a_end, b_start, b_end in _sync_regions(b_lines, o_lines,
                                                                        t_lines):
        base_chunk, ours_chunk = b_lines[z:z_start], o_lines[a:a_start]
        theirs_chunk = t_lines[b:b_start]
        if ours_chunk == theirs_chunk or theirs_chunk == base_chunk:
            out += ours_chunk
        elif ours_chunk == base_chunk:
            out += theirs_chunk
        else:
            conflicts += 1
            out += [f"<<<<<<< {OURS_LABEL}\n", *_ended(ours_chunk), "=======\n",
                    *_ended(theirs_chunk), f">>>>>>> {THEIRS_LABEL}\n"]
        out += b_lines[z_start:z_end]
        z, a, b = z_end, a_end, b_end
    return MergeResult("".join(out), conflicts)


def _ended(lines: list[str]) -> list[str]:
    # A chunk at the end of a file may lack its newline; the marker must start a line.
    if lines and not lines[-1].endswith("\n"):
        return [*lines[:-1], lines[-1] + "\n"]
    return lines
