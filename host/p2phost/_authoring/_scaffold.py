"""Writing a project from a template (``plugin new``) and updating it (``--update``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ._answers import Answers, read_tree
from ._errors import TargetExists
from ._merge import merge3
from ._render import Asker, render, resolve_answers
from ._template import Template


@dataclass(frozen=True)
class FileChange:
    """What happened to one file of the project."""

    path: str
    #: created, updated (took the template's change), merged (yours and the template's),
    #: conflict, removed, kept (yours, though the template dropped it), unchanged,
    #: skipped (you deleted it; it stays deleted).
    action: str
    conflicts: int = 0


@dataclass
class ScaffoldReport:
    """The outcome of ``plugin new`` or ``plugin new --update``."""

    directory: Path
    kind: str
    answers: dict[str, Any]
    changes: list[FileChange] = field(default_factory=list)

    @property
    def conflicts(self) -> list[FileChange]:
        """The files left with conflict markers."""
        return [c for c in self.changes if c.action == "conflict"]


def _write(directory: Path, rel: str, text: str) -> None:
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def generate(template: Template, directory: Path, given: Mapping[str, str],
             ask: Asker | None, *, force: bool = False) -> ScaffoldReport:
    """Ask the questions and write a new project into ``directory``."""
    if directory.exists() and not directory.is_dir():
        raise TargetExists(f"{directory} exists and is not a directory",
                           fix="choose another place with --dir")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise TargetExists(f"{directory} exists and is not empty",
                           fix="choose another place with --dir, or pass --force to write "
                               "over its files")
    answers = resolve_answers(template, given, ask)
    files = render(template, answers)
    directory.mkdir(parents=True, exist_ok=True)
    report = ScaffoldReport(directory, template.kind, answers)
    for rel, text in sorted(files.items()):
        _write(directory, rel, text)
        report.changes.append(FileChange(rel, "created"))
    Answers(template.kind, answers, files, template.digest(), __version__).save(directory)
    return report


def update(directory: Path, given: Mapping[str, str], ask: Asker | None,
           template: Template | None = None) -> ScaffoldReport:
    """Re-render ``directory`` with the current template and merge three ways.

    Base = what the template rendered last time (kept in the answers file), theirs = what
    it renders now, ours = the files as the author left them. The author's edits win
    where the template did not change; real conflicts get standard markers.
    """
    old = Answers.load(directory)
    template = Template.load(old.kind) if template is None else template
    # Earlier answers still hold; --set overrides them; new questions are asked.
    previous = {k: _as_text(v) for k, v in old.answers.items() if template.question(k)}
    if "distribution" not in old.answers and "name" in old.answers:
        # Made before the question existed: it was published under its plugin name, and a
        # release under another distribution name would be a different package to pip.
        previous["distribution"] = _as_text(old.answers["name"])
    answers = resolve_answers(template, {**previous, **given}, ask)
    theirs = render(template, answers)
    ours = read_tree(directory, set(old.base) | set(theirs))
    report = ScaffoldReport(directory, template.kind, answers)
    base = dict(theirs)
    for rel in sorted(set(old.base) | set(theirs)):
        change = _update_file(directory, rel, ours.get(rel), old.base.get(rel), theirs.get(rel))
        if change is not None:
            report.changes.append(change)
            if change.action == "conflict":
                # The template's change is not in the file until the author resolves it:
                # keep the old base so the next --update still sees that change.
                if rel in old.base:
                    base[rel] = old.base[rel]
                else:
                    base.pop(rel, None)
    Answers(template.kind, answers, base, template.digest(), __version__).save(directory)
    return report


def _update_file(directory: Path, rel: str, mine: str | None, base: str | None,
                 new: str | None) -> FileChange | None:
    if new is None:  # the template no longer has this file
        if mine is None:
            return None
        if mine == base:
            (directory / rel).unlink()
            return FileChange(rel, "removed")
        return FileChange(rel, "kept")
    if mine is None:
        if base is None:
            _write(directory, rel, new)
            return FileChange(rel, "created")
        return FileChange(rel, "skipped")  # the author deleted it: respect that
    result = merge3(mine, base or "", new)
    if result.text != mine:
        _write(directory, rel, result.text)
    if result.conflicts:
        return FileChange(rel, "conflict", result.conflicts)
    if result.text == mine:
        return FileChange(rel, "unchanged")
    return FileChange(rel, "updated" if mine == base else "merged")


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)

